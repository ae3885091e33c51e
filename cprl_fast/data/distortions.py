"""Synthetic distortions at five levels each, and the pseudo-MOS they are scored by: what the
built-in datasets and :func:`cprl_fast.data.synthetic.synthesize` generate.

:data:`DISTORTIONS` maps each type to its five parameters (level 1 = mildest). The list follows
KADID-10k's 25 types (Lin, Hosu and Saupe, QoMEX 2019), each made with numpy, scipy, Pillow or
scikit-image, plus ``ringing`` (an ideal low-pass). Where this differs from KADID-10k's own
code: motion blur is horizontal, the colour shift (``chroma``) moves red and blue apart
everywhere rather than at edges, ``denoised`` (KADID-10k's "denoise") uses total-variation
denoising (scikit-image) where KADID-10k used its own denoiser, and the patches of
``patch_shift`` and ``colour_block`` are 16 px in a 256 x 256 image, in proportion in others.
builtin-v1 uses the first five types (:data:`LEVELS`), builtin-v2 the first ten
(:data:`LEVELS_V2`); their images do not change when types are added here.

The pseudo-MOS of a distorted image is :func:`ms_ssim` against its reference (piq's
``multi_scale_ssim``, float32), min-max mapped to [0, 1] over a dataset.
"""

from __future__ import annotations

import io
import threading
import warnings

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, features

from cprl_fast.images import DEFAULT_MAX_PIXELS, check_resized_pixels

LEVELS = {
    "blur": (0.8, 1.5, 2.5, 4.0, 6.0),  # Gaussian radius, px
    "noise": (0.02, 0.05, 0.09, 0.14, 0.20),  # standard deviation on [0, 1]
    "jpeg": (50, 25, 12, 6, 2),  # quality
    "contrast": (0.7, 0.5, 0.35, 0.22, 0.12),  # contrast factor
    "pixelate": (2, 3, 4, 6, 9),  # block size, px
}
LEVELS_V2 = {
    **LEVELS,
    "saturation": (0.6, 0.4, 0.2, 0.1, 0.0),  # colour factor (0: greyscale)
    "quantise": (32, 16, 8, 5, 3),  # grey levels per channel
    "motion": (5, 9, 15, 23, 33),  # horizontal motion-blur length, px
    "ringing": (0.5, 0.35, 0.22, 0.14, 0.08),  # ideal low-pass cut-off, share of Nyquist
    "chroma": (1, 2, 4, 6, 9),  # red and blue channels shifted apart, px
}
#: Every type with its five parameters: builtin-v2's ten, then the further KADID-10k types.
DISTORTIONS = {
    **LEVELS_V2,
    "brighten": (1.2, 1.45, 1.8, 2.3, 3.0),  # gamma lift: x ** (1 / p)
    "darken": (1.2, 1.45, 1.8, 2.3, 3.0),  # gamma: x ** p
    "mean_shift": (0.04, 0.08, 0.13, 0.19, 0.26),  # added to every pixel, on [0, 1]
    "impulse": (0.005, 0.015, 0.03, 0.06, 0.1),  # share of pixels set to 0 or 1
    "multiplicative": (0.05, 0.1, 0.18, 0.28, 0.4),  # std of speckle: x * (1 + N(0, p))
    "sharpen": (100, 200, 300, 450, 650),  # unsharp mask strength, percent (radius 2 px)
    "jitter": (1, 2, 3, 4, 6),  # each pixel taken from up to p px away
    "lens_blur": (1, 2, 3, 5, 7),  # radius of a disk (defocus) kernel, px
    "colour_diffusion": (1, 2, 4, 7, 12),  # Gaussian sigma of CIELAB's a* and b*, px
    "colour_quantise": (64, 32, 16, 8, 4),  # palette size (median cut, Floyd-Steinberg dither)
    "oversaturate": (1.5, 2.0, 3.0, 4.5, 6.0),  # CIELAB a* and b* multiplied by p
    "jpeg2000": (20, 40, 80, 160, 320),  # JPEG 2000 compression ratio
    "chroma_noise": (0.02, 0.04, 0.07, 0.11, 0.16),  # std of noise on Cb and Cr, share of range
    "denoised": (0.03, 0.06, 0.1, 0.15, 0.22),  # std of white noise, then TV-denoised
    "patch_shift": (10, 20, 40, 70, 110),  # patches copied up to a patch's side away (PATCH)
    "colour_block": (1, 2, 4, 7, 11),  # blocks of one random colour (side: PATCH)
}


#: The types whose parameter is a count (quality, pixels, grey levels): rounded to an integer.
INTEGER_KINDS = frozenset({"jpeg", "pixelate", "quantise", "motion", "chroma", "jitter",
                           "lens_blur", "colour_quantise", "jpeg2000", "patch_shift",
                           "colour_block"})  # fmt: skip
#: The side of a ``patch_shift`` patch and of a ``colour_block`` block, and the farthest a patch
#: moves, px, in a 256 x 256 image; in proportion to ``sqrt(h * w)`` in others.
PATCH = 16


#: ``warnings.catch_warnings`` swaps the process's filter list on entry and puts back the one it
#: found on exit, so two threads that overlap (the built-in data is made in threads) would leave
#: the first one's "ignore UserWarning" installed for good: one thread at a time.
_WARNINGS_LOCK = threading.Lock()


def distort(img: Image.Image, kind: str, level: int, seed: int) -> Image.Image:
    """``img`` (RGB) distorted by ``kind`` at ``level`` (1..5); ``seed`` drives the noise."""
    if kind not in DISTORTIONS:
        raise ValueError(f"unknown distortion {kind!r} (known: {', '.join(DISTORTIONS)})")
    if level not in range(1, 6):
        raise ValueError(f"distortion level must be 1..5, got {level!r}")
    return distort_by(img, kind, DISTORTIONS[kind][level - 1], seed)


def distort_by(img: Image.Image, kind: str, p: float, seed: int) -> Image.Image:
    """``img`` (RGB) distorted by ``kind`` with parameter ``p`` in the unit of
    :data:`DISTORTIONS`: any value, for example between two levels (rounded for
    :data:`INTEGER_KINDS`, motion lengths to an odd one). ``seed`` drives the noise.
    :func:`distort` at a level is this at the level's parameter."""
    if kind not in DISTORTIONS:
        raise ValueError(f"unknown distortion {kind!r} (known: {', '.join(DISTORTIONS)})")
    if kind in INTEGER_KINDS:
        p = max(1, round(p))
    if kind == "motion":  # an odd length keeps the blur centred and the width unchanged
        p = 2 * (p // 2) + 1
    if kind == "quantise" and p < 2:
        raise ValueError(f"quantise needs at least 2 grey levels per channel, got {p}")
    w, h = img.size
    if kind == "blur":
        return img.filter(ImageFilter.GaussianBlur(radius=p))
    if kind == "sharpen":
        return img.filter(ImageFilter.UnsharpMask(radius=2, percent=int(p), threshold=0))
    if kind in ("jpeg", "jpeg2000"):
        if kind == "jpeg2000" and not features.check("jpg_2000"):
            raise RuntimeError(
                "distortion 'jpeg2000' needs Pillow with JPEG 2000 support "
                "(OpenJPEG; Pillow's wheels have it): choose other distortions"
            )
        buf = io.BytesIO()
        if kind == "jpeg":
            img.save(buf, format="JPEG", quality=int(p))
        else:
            img.save(buf, format="JPEG2000", quality_mode="rates", quality_layers=[int(p)])
        buf.seek(0)
        with Image.open(buf) as out:
            return out.convert("RGB")
    if kind == "colour_quantise":
        return img.quantize(colors=int(p), method=Image.Quantize.MEDIANCUT,
                            dither=Image.Dither.FLOYDSTEINBERG).convert("RGB")  # fmt: skip
    if kind == "contrast":
        return ImageEnhance.Contrast(img).enhance(p)
    if kind == "saturation":
        return ImageEnhance.Color(img).enhance(p)
    if kind == "pixelate":
        small = img.resize((max(1, w // p), max(1, h // p)), Image.BOX)
        return small.resize((w, h), Image.NEAREST)
    rng = np.random.default_rng(seed)
    arr = np.asarray(img, dtype=np.float64) / 255.0
    if kind == "noise":
        arr = arr + rng.normal(0.0, p, arr.shape)
    elif kind == "quantise":
        arr = np.round(arr * (p - 1)) / (p - 1)
    elif kind == "motion":
        from scipy.ndimage import uniform_filter1d

        # the mean of the p pixels centred on each (p odd), edges repeated: a sum of p values
        # of k / 255 never lies half-way between two 8-bit steps, so any exact-to-1e-12 mean
        # (this running sum, or a convolution) writes the same image
        arr = uniform_filter1d(arr, int(p), axis=1, mode="nearest")
    elif kind == "ringing":  # an ideal (brick-wall) low-pass: Gibbs ringing at edges
        f = np.fft.fft2(arr, axes=(0, 1))
        fy, fx = np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing="ij")
        keep = (np.abs(fy) <= p / 2) & (np.abs(fx) <= p / 2)
        arr = np.real(np.fft.ifft2(f * keep[..., None], axes=(0, 1)))
    elif kind == "chroma":
        arr = arr.copy()
        arr[..., 0] = np.roll(arr[..., 0], p, axis=1)
        arr[..., 2] = np.roll(arr[..., 2], -p, axis=1)
    elif kind == "brighten":
        arr = arr ** (1.0 / p)
    elif kind == "darken":
        arr = arr**p
    elif kind == "mean_shift":
        arr = arr + p
    elif kind == "impulse":
        hit = rng.random(arr.shape[:2]) < p
        arr = arr.copy()
        arr[hit] = rng.integers(0, 2, (int(hit.sum()), 1)).astype(np.float64)
    elif kind == "multiplicative":
        arr = arr * (1.0 + rng.normal(0.0, p, arr.shape))
    elif kind == "jitter":
        ys = np.clip(np.arange(h)[:, None] + rng.integers(-p, p + 1, (h, w)), 0, h - 1)
        xs = np.clip(np.arange(w)[None, :] + rng.integers(-p, p + 1, (h, w)), 0, w - 1)
        arr = arr[ys, xs]
    elif kind == "lens_blur":
        from scipy.ndimage import convolve
        from skimage.morphology import disk

        kernel = disk(p).astype(np.float64)
        arr = convolve(arr, (kernel / kernel.sum())[..., None], mode="reflect")
    elif kind in ("colour_diffusion", "oversaturate"):
        from scipy.ndimage import gaussian_filter
        from skimage.color import lab2rgb, rgb2lab

        lab = rgb2lab(arr)
        if kind == "colour_diffusion":
            lab[..., 1:] = gaussian_filter(lab[..., 1:], sigma=(p, p, 0), mode="reflect")
        else:
            lab[..., 1:] *= p
        with _WARNINGS_LOCK, warnings.catch_warnings():  # colours outside sRGB: clipped, as meant
            warnings.simplefilter("ignore", UserWarning)
            arr = lab2rgb(lab)
    elif kind == "chroma_noise":
        from skimage.color import rgb2ycbcr, ycbcr2rgb

        ycc = rgb2ycbcr(arr)
        ycc[..., 1:] += rng.normal(0.0, p * (240.0 - 16.0), ycc[..., 1:].shape)
        arr = ycbcr2rgb(ycc)
    elif kind == "denoised":
        from skimage.restoration import denoise_tv_chambolle

        noisy = arr + rng.normal(0.0, p, arr.shape)
        arr = denoise_tv_chambolle(noisy, weight=p, channel_axis=-1)
    elif kind in ("patch_shift", "colour_block"):
        arr = arr.copy()
        s = min(max(2, round(PATCH * (h * w) ** 0.5 / 256)), h, w)
        for _ in range(int(p)):
            y, x = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
            if kind == "colour_block":
                arr[y : y + s, x : x + s] = rng.random(3)
            else:
                dy, dx = rng.integers(-s, s + 1, 2)
                ty, tx = int(np.clip(y + dy, 0, h - s)), int(np.clip(x + dx, 0, w - s))
                arr[ty : ty + s, tx : tx + s] = arr[y : y + s, x : x + s].copy()
    return Image.fromarray(np.round(np.clip(arr, 0, 1) * 255).astype(np.uint8))


def square(img: Image.Image, size: int, max_pixels: int = DEFAULT_MAX_PIXELS,
           name: str = "image") -> Image.Image:
    """``img`` with its shorter side resized to ``size`` (bicubic), centre-cropped to
    ``size x size``; an image the resize would make larger than ``max_pixels`` is refused
    (:func:`cprl_fast.images.check_resized_pixels`, naming it as ``name``)."""
    w, h = img.size
    check_resized_pixels(w, h, size, max_pixels, name)
    scale = size / min(w, h)
    img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size))


def ms_ssim(a: Image.Image, b: Image.Image) -> float:
    """MS-SSIM of two RGB images of one size (piq, float32, data range 1)."""
    import piq
    import torch

    def t(img):
        return (
            torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)
            .permute(2, 0, 1)[None]
            .contiguous()
        )

    return float(piq.multi_scale_ssim(t(a), t(b), data_range=1.0))
