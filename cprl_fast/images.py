"""Decoding image files as a person sees them, with a size limit: every image the library reads
(datasets, :mod:`cprl_fast.score`, ``cprl-fast score``) goes through :func:`read_image`.

What a viewer shows, for every mode Pillow opens:

- 8-bit modes (``1``, ``L``, ``P``, ``RGB``, ``CMYK``, ``YCbCr``, ...) are converted by Pillow;
  a 48-bit (16 bits per channel) RGB file is decoded by Pillow to its 8-bit ``RGB``.
- 16-bit and 32-bit integer greyscale (``I;16``, ``I;16B``, ``I;16L``, ``I``) are scaled by the
  range of their bit depth: ``I;16*`` by 65535; ``I`` by 255, 65535 or 2**31 - 1, the smallest
  that holds its largest value (Pillow opens 8-bit and 16-bit data as ``I`` from some formats);
  negative values count as black.
- Float greyscale (``F``) is read as values in [0, 1] when its largest value is at most 1, else
  scaled as ``I`` is; non-finite pixels make the file unreadable (an error, never a score).
- Transparency (an alpha band, or a palette or greyscale ``transparency`` entry) is composited
  on :data:`BACKGROUND`, white, as a browser shows the image on a white page.
- The EXIF orientation tag is applied (``ImageOps.exif_transpose``), as viewers do.
- Only the first frame of an animated or multi-page file is read.

Only the raster formats of :data:`READ_FORMATS` are opened (never EPS, which Pillow renders by
running Ghostscript on the file's PostScript program).

A JPEG of more than :data:`MAX_JPEG_SCANS` scans is refused before it is decoded (each scan
costs a pass over the image, however small the file: :func:`check_jpeg_scans`).

A file whose pixel count exceeds ``max_pixels`` (default :data:`DEFAULT_MAX_PIXELS`), or that
Pillow refuses as a decompression bomb (more than twice ``PIL.Image.MAX_IMAGE_PIXELS``, whatever
``max_pixels`` says), raises :class:`ImageTooLarge` after reading only its header, so memory
stays bounded by the limit. The same limit bounds the image once its shorter side is resized
for a model (:func:`check_resized_pixels`), which a very thin image would otherwise blow up.
``max_pixels``, not Pillow's ``DecompressionBombWarning`` (issued between ``MAX_IMAGE_PIXELS``
and twice that), decides: the warning goes through the process's own filters, which this
module never changes (the decoding threads of :mod:`cprl_fast.score` would otherwise leave a
filter of theirs installed for good, as ``warnings.catch_warnings`` is not thread-safe), and
where those filters make it an error it is an :class:`ImageTooLarge`. ``cprl-fast`` ignores it.

Messages name the file with its control characters escaped (:func:`cprl_fast.io.printable`),
so that a name holding a newline cannot cut the one-line error short.
"""

from __future__ import annotations

import contextlib
import functools
import mmap
import re
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cprl_fast.checks import check_count
from cprl_fast.io import open_regular_file, printable

#: The default per-image pixel limit: 8192 x 8192 (about 201 MB as 8-bit RGB), below Pillow's
#: own decompression-bomb warning (89,478,485 pixels).
DEFAULT_MAX_PIXELS = 8192 * 8192

#: The formats :func:`read_image` opens, by Pillow's names: raster formats Pillow decodes
#: itself. Pillow tells a format by a file's content, not its name, and renders EPS through
#: Ghostscript, an interpreter of the file's PostScript program: an EPS file named ``x.png``
#: would run it. Every other format is refused unopened. (A multi-picture JPEG opens through
#: ``JPEG`` as Pillow's ``MPO``.)
READ_FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "WEBP", "GIF", "PPM")


@functools.cache
def image_suffixes() -> tuple[str, ...]:
    """The suffixes (lower case, sorted) that make a file in a folder an image to read: those
    Pillow registers for :data:`READ_FORMATS` (``.png``, ``.jpg``, ``.gif``, ``.ppm``, ...), so
    that a folder's files in a format :func:`read_image` reads are never left out."""
    return tuple(sorted(s for s, fmt in Image.registered_extensions().items()
                        if fmt in READ_FORMATS))  # fmt: skip


def folder_images(folder: Path) -> list[Path]:
    """The entries under ``folder`` (recursively, sorted; links to folders are not entered)
    whose suffix is one of :func:`image_suffixes` and that are not folders. A FIFO, device or
    broken link so named is listed: :func:`read_image` refuses it by name, unopened, rather
    than it being left out unsaid."""
    suffixes = image_suffixes()
    return sorted(f for f in folder.rglob("*") if f.suffix.lower() in suffixes and not f.is_dir())


#: The colour transparent images are composited on (white, as on a white page).
BACKGROUND = (255, 255, 255)

_INT16_MODES = ("I;16", "I;16B", "I;16L", "I;16N")


class ImageTooLarge(OSError, ValueError):
    """An image over the pixel limit (as read, or once resized for a model), or one Pillow
    refuses as a decompression bomb. A ``ValueError`` too, as a tensor too thin to resize is
    bad input rather than a bad file (``io.UnsupportedOperation`` is both the same way)."""


def check_max_pixels(max_pixels: int, name: str = "max_pixels") -> int:
    """The pixel limit: an integer >= 1."""
    return check_count(max_pixels, name)


def check_resized_pixels(width: int, height: int, size: int,
                         max_pixels: int = DEFAULT_MAX_PIXELS, name: str = "image") -> None:
    """Raises :class:`ImageTooLarge` where resizing a ``width x height`` image's shorter side to
    ``size`` px (docs/maths.md §7; torchvision's ``Resize(size)``) would make more than
    ``max_pixels`` pixels: a thin strip of a few hundred bytes (1 x 20000 px) would otherwise
    become gigabytes before the centre crop. Call it before resizing."""
    short, long = sorted((int(width), int(height)))
    if short < 1:
        raise ValueError(f"{name} has no pixels ({width} x {height})")
    pixels = size * (size * long // short)
    if pixels > max_pixels:
        raise ImageTooLarge(f"{name} of {width} x {height} px would have {pixels} pixels once its "
                            f"shorter side is resized to {size} px, over the limit of "
                            f"{max_pixels} (max_pixels; --max-pixels): crop it nearer to a "
                            "square first")  # fmt: skip


def read_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """The image file ``path`` as an 8-bit RGB PIL image, as a viewer shows it (see the module's
    docstring). Raises ``FileNotFoundError`` for a missing file, :class:`ImageTooLarge` for one
    over ``max_pixels``, :class:`~cprl_fast.io.NotARegularFile` for a folder, FIFO, device or
    socket (never read: reading one could block or never end; an ``OSError``) and ``OSError``
    for one that cannot be decoded; each names the file."""
    max_pixels = check_max_pixels(max_pixels)
    fh = open_regular_file(path, "image")
    name = printable(str(path))
    try:
        with fh:
            try:
                opened = Image.open(fh, formats=READ_FORMATS)
            except UnidentifiedImageError:
                raise OSError(f"not an image of the formats read ({', '.join(READ_FORMATS)})"
                              ) from None  # fmt: skip
            with opened as img:
                pixels = img.size[0] * img.size[1]
                if pixels > max_pixels:
                    raise ImageTooLarge(
                        f"image {name} has {img.size[0]} x {img.size[1]} = {pixels} pixels, "
                        f"over the limit of {max_pixels} (max_pixels; --max-pixels)"
                    )
                if img.format in ("JPEG", "MPO"):
                    check_jpeg_scans(fh)
                img.load()
                return to_rgb(img)
    except ImageTooLarge:
        raise
    except Image.DecompressionBombError as err:
        raise ImageTooLarge(f"image {name} refused as a decompression bomb ({err}): "
                            f"{_bomb_limit(max_pixels)}") from None
    except Image.DecompressionBombWarning as err:  # raised: the process's filters say so
        raise ImageTooLarge(f"image {name} refused as a decompression bomb ({err}): this "
                            "process's warnings filters make Pillow's warning an error") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as err:
        raise OSError(f"cannot decode image {name}: {err}") from err


def _bomb_limit(max_pixels: int) -> str:
    """Why an image Pillow refused as a decompression bomb is not read: over ``max_pixels`` too,
    or over Pillow's own bound, which ``max_pixels`` cannot raise."""
    bound = 2 * (Image.MAX_IMAGE_PIXELS or 0)
    if max_pixels < bound:
        return f"over the limit of {max_pixels} (max_pixels; --max-pixels) too"
    return (f"Pillow opens no image of more than {bound} pixels (twice "
            f"PIL.Image.MAX_IMAGE_PIXELS), whatever max_pixels is")


#: The most scans a JPEG file may have. An encoder writes 1 to 3 (baseline) or about 10 to 20
#: (progressive); each scan costs a pass over the image's blocks however few bytes it has, so
#: 10,000 empty scans (1.4 MB) kept libjpeg busy for 43 s on an 8192 x 8192 image (this
#: project's 2-core VM). libjpeg-turbo's fuzzers stop at 500 as well (``TJPARAM_SCANLIMIT``).
MAX_JPEG_SCANS = 500

#: The most marker segments (of any kind, scans included) a JPEG file may have before its
#: first EOI: an encoder writes a few dozen; the bound keeps :func:`check_jpeg_scans` itself
#: brief (a walk of 10,000 segments takes a few milliseconds).
MAX_JPEG_SEGMENTS = 10_000

#: The most bytes :func:`check_jpeg_scans` reads where a file cannot be memory-mapped: far
#: above any JPEG within the default pixel limit (67 MP, about 200 MB as raw RGB).
MAX_JPEG_READ = 512 << 20

#: The start of the next marker after entropy-coded data: 0xFF followed by neither a stuffed
#: 0x00, a restart marker (0xD0-0xD7) nor a fill byte 0xFF.
_NEXT_MARKER = re.compile(rb"\xff(?![\x00\xd0-\xd7\xff])")
_FILL = re.compile(rb"\xff+")


def check_jpeg_scans(fh: BinaryIO, limit: int = MAX_JPEG_SCANS) -> int:
    """The number of scans (SOS segments) of the JPEG file open as ``fh``, up to its first EOI;
    ``ValueError`` when there are more than ``limit``, or more than :data:`MAX_JPEG_SEGMENTS`
    segments. Walks the marker segments by their lengths (metadata is skipped, never searched)
    over a read-only memory map, so nothing is decoded or copied (where the file system
    cannot map files, over its bytes, of at most :data:`MAX_JPEG_READ`); a malformed stream
    ends the count and is left to the decoder."""
    try:
        view = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):  # no mmap here: the bytes instead, from where they start
        at = fh.tell()
        fh.seek(0)
        data = fh.read(MAX_JPEG_READ + 1)
        fh.seek(at)
        if len(data) > MAX_JPEG_READ:
            raise ValueError(f"a JPEG of more than {MAX_JPEG_READ} bytes on a file system "
                             "that cannot map it, refused (its scans cannot be counted)") from None
        view = contextlib.nullcontext(data)
    with view as m:
        end, pos, scans = len(m), 2, 0  # after SOI
        for _ in range(MAX_JPEG_SEGMENTS):
            fill = _FILL.match(m, pos)  # a marker, after any fill bytes
            if fill is None or fill.end() >= end:
                return scans
            pos, marker = fill.end() - 1, m[fill.end()]
            if marker == 0xD9:  # EOI
                return scans
            if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
                pos += 2
                continue
            if pos + 3 >= end:
                return scans
            pos += 2 + (m[pos + 2] << 8 | m[pos + 3])
            if marker == 0xDA:  # SOS: its entropy-coded data runs to the next marker
                scans += 1
                if scans > limit:
                    raise ValueError(f"a JPEG of more than {limit} scans, refused (an encoder "
                                     "writes at most a few dozen; each costs a pass over the "
                                     "image)")  # fmt: skip
                found = _NEXT_MARKER.search(m, pos)
                if found is None:
                    return scans
                pos = found.start()
    raise ValueError(f"a JPEG of more than {MAX_JPEG_SEGMENTS} marker segments, refused (an "
                     "encoder writes a few dozen)")


def to_rgb(img: Image.Image) -> Image.Image:
    """A PIL image of any mode -> 8-bit RGB as a viewer shows it (EXIF orientation applied,
    high bit depths scaled, transparency composited on :data:`BACKGROUND`)."""
    img = ImageOps.exif_transpose(img) or img
    if img.mode in (*_INT16_MODES, "I", "F"):
        return Image.fromarray(_grey_to_uint8(np.asarray(img), img.mode), "L").convert("RGB")
    if img.mode == "RGB":
        return img.copy()
    if "A" in img.getbands() or "a" in img.getbands() or "transparency" in img.info:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _grey_to_uint8(a: np.ndarray, mode: str) -> np.ndarray:
    """High-bit-depth greyscale -> uint8, scaled by the range of its bit depth."""
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"{mode} image has non-finite pixels (NaN or infinity)")
    top = float(a.max()) if a.size else 0.0
    if mode in _INT16_MODES:
        scale = 65535.0
    elif mode == "F" and top <= 1.0:
        scale = 1.0
    else:
        scale = next(s for s in (255.0, 65535.0, 2.0**31 - 1) if top <= s or s == 2.0**31 - 1)
    return np.rint(np.clip(a / scale, 0.0, 1.0) * 255.0).astype(np.uint8)
