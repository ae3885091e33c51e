"""Images as a person sees them, and within a size limit: every mode Pillow opens decodes to the
pixels of its 8-bit twin (16-bit and float greyscale scaled by their range, alpha composited on
white, EXIF orientation applied), and an image over the pixel limit or a decompression bomb is a
failure naming the limit, read no further than its header, while the other images are scored."""

from __future__ import annotations

import re
import struct
import subprocess
import sys
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import cprl_fast
from cprl_fast.images import DEFAULT_MAX_PIXELS, ImageTooLarge, read_image

H, W = 20, 12  # not square: orientation mistakes show


def _twin() -> np.ndarray:
    """An 8-bit RGB picture with every channel different and edges."""
    y, x = np.mgrid[0:H, 0:W]
    return np.stack([(y * 13) % 256, (x * 21) % 256, (x * y * 5 + 40) % 256], -1).astype(np.uint8)


def _grey() -> np.ndarray:
    return _twin()[..., 0]


def _save(img: Image.Image, path: Path, fmt: str = "PNG", **kw) -> Path:
    img.save(path, fmt, **kw)
    return path


def _png(path: Path, a: np.ndarray, bit_depth: int, colour: int) -> Path:
    """A PNG written by hand (Pillow writes no 48-bit RGB): ``a`` [H, W(, C)] big-endian rows."""
    h, w = a.shape[:2]
    rows = b"".join(b"\0" + a[r].astype(">u2" if bit_depth == 16 else "u1").tobytes()
                    for r in range(h))  # fmt: skip
    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, colour, 0, 0, 0)
    return _write_png(path, ihdr, zlib.compress(rows))


def _write_png(path: Path, ihdr: bytes, idat: bytes) -> Path:
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat)
                     + chunk(b"IEND", b""))  # fmt: skip
    return path


def _rgb(path: Path) -> np.ndarray:
    return np.asarray(read_image(path))


def _grey_rgb(g: np.ndarray) -> np.ndarray:
    return np.repeat(g[..., None], 3, axis=2)


def test_8bit_modes_decode_to_their_twin(tmp_path):
    a, g = _twin(), _grey()
    cases = {
        "RGB": (Image.fromarray(a), a),
        "L": (Image.fromarray(g), _grey_rgb(g)),
        "1": (Image.fromarray(g > 127), _grey_rgb(np.where(g > 127, 255, 0).astype(np.uint8))),
        "CMYK": (Image.fromarray(a).convert("CMYK"), a),
    }
    p = Image.fromarray(a).quantize(64)
    cases["P"] = (p, np.asarray(p.convert("RGB")))
    for mode, (img, want) in cases.items():
        assert img.mode == mode
        fmt = "TIFF" if mode == "CMYK" else "PNG"
        got = _rgb(_save(img, tmp_path / f"{mode}.{fmt.lower()}", fmt))
        np.testing.assert_array_equal(got, want, err_msg=mode)


def test_16bit_and_float_greyscale_are_scaled_by_their_range(tmp_path):
    g = _grey()
    want = _grey_rgb(g)
    i16 = Image.fromarray(g.astype(np.uint16) * 257)
    assert i16.mode == "I;16"
    np.testing.assert_array_equal(_rgb(_save(i16, tmp_path / "i16.png")), want)  # was all white
    for name, data in {"i8": g.astype(np.int32), "i16": g.astype(np.int32) * 257}.items():
        img = Image.fromarray(data)
        assert img.mode == "I"
        np.testing.assert_array_equal(_rgb(_save(img, tmp_path / f"{name}.tif", "TIFF")), want)
    for name, data in {"unit": g / 255.0, "byte": g.astype(np.float64)}.items():
        img = Image.fromarray(data.astype(np.float32))
        assert img.mode == "F"
        np.testing.assert_array_equal(_rgb(_save(img, tmp_path / f"f{name}.tif", "TIFF")), want)
    bad = Image.fromarray(np.full((H, W), np.nan, np.float32))
    with pytest.raises(OSError, match="non-finite"):
        read_image(_save(bad, tmp_path / "nan.tif", "TIFF"))


def test_48bit_rgb_decodes_to_its_twin(tmp_path):
    a = _twin()
    path = _png(tmp_path / "rgb48.png", a.astype(np.uint16) * 257, 16, 2)
    with Image.open(path) as img:
        assert img.mode in ("RGB", "I;16", "RGB;16")  # Pillow's reading of 16-bit RGB
    np.testing.assert_array_equal(_rgb(path), a)


def test_transparency_is_composited_on_white(tmp_path):
    a = _twin()
    alpha = np.zeros((H, W), np.uint8)
    alpha[:, W // 3 :] = 128
    alpha[:, 2 * W // 3 :] = 255
    blend = np.rint(a * (alpha[..., None] / 255) + 255 * (1 - alpha[..., None] / 255))
    rgba = np.dstack([a, alpha])
    got = _rgb(_save(Image.fromarray(rgba, "RGBA"), tmp_path / "rgba.png")).astype(int)
    assert np.abs(got - blend).max() <= 1  # fully transparent pixels are white, not their RGB
    assert (got[:, : W // 3] == 255).all()
    g = _grey()
    la = Image.fromarray(np.dstack([g, alpha]), "LA")
    got = _rgb(_save(la, tmp_path / "la.png")).astype(int)
    assert np.abs(got - np.rint(g[..., None] * (alpha[..., None] / 255)
                                + 255 * (1 - alpha[..., None] / 255))).max() <= 1  # fmt: skip
    p = Image.fromarray(a).quantize(16)
    index = np.asarray(p)[0, 0]
    p.info["transparency"] = int(index)
    got = _rgb(_save(p, tmp_path / "p.png", transparency=int(index)))
    assert (got[np.asarray(p) == index] == 255).all()


@pytest.mark.parametrize("orientation,turns", [(3, 2), (6, -1), (8, 1)])
def test_exif_orientation_is_applied(tmp_path, orientation, turns):
    a = _twin()
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = _save(Image.fromarray(a), tmp_path / "o.png", exif=exif)
    np.testing.assert_array_equal(_rgb(path), np.rot90(a, k=turns))


def test_pixel_limit_and_decompression_bombs(tmp_path):
    a = _twin()
    path = _save(Image.fromarray(a), tmp_path / "small.png")
    assert read_image(path, max_pixels=H * W).size == (W, H)
    with pytest.raises(ImageTooLarge, match=f"over the limit of {H * W - 1}"):
        read_image(path, max_pixels=H * W - 1)
    bomb = _bomb(tmp_path / "bomb.png", 30_000)
    with pytest.raises(ImageTooLarge, match="limit"):
        read_image(bomb)
    with pytest.raises(ImageTooLarge, match="decompression bomb"):
        read_image(bomb, max_pixels=10**10)  # Pillow's own limit still holds
    with pytest.raises(ValueError, match="max_pixels must be an integer >= 1"):
        read_image(path, max_pixels=0)


def test_max_pixels_decides_not_pillows_bomb_warning(tmp_path, monkeypatch):
    # Pillow warns between its MAX_IMAGE_PIXELS and twice that and refuses beyond; this image
    # has H x W = 240 pixels. The warning used to be an error: a limit above it was not kept
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 200)
    path = _save(Image.fromarray(_twin()), tmp_path / "warned.png")
    with pytest.warns(Image.DecompressionBombWarning):  # Pillow's, through the process's filters
        assert read_image(path, max_pixels=H * W).size == (W, H)
        with pytest.raises(ImageTooLarge, match=f"= {H * W} pixels, over the limit of {H * W - 1}"):
            read_image(path, max_pixels=H * W - 1)
    with warnings.catch_warnings():  # the process's own filters are kept
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(ImageTooLarge, match="filters make Pillow's warning an error"):
            read_image(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # refused: over 200
    with pytest.raises(ImageTooLarge, match=re.escape("): over the limit of 199 (max_pixels; "
                                                      "--max-pixels) too")):  # fmt: skip
        read_image(path, max_pixels=199)
    with pytest.raises(ImageTooLarge, match="Pillow opens no image of more than 200 pixels"):
        read_image(path, max_pixels=10**6)


def test_reading_in_threads_leaves_the_warning_filters_as_they_were(tmp_path):
    # warnings.catch_warnings is not thread-safe: overlapping in the score's decoding threads,
    # it left "error" for Pillow's bomb warning installed in the process for good
    path = _save(Image.fromarray(_twin()), tmp_path / "t.png")
    before = list(warnings.filters)

    def read(_):
        for _ in range(100):
            read_image(path)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(read, range(4)))
    assert warnings.filters == before


def test_a_name_with_a_newline_is_escaped_not_cut(tiny_metric, tmp_path):
    # score's failure rows and the command line kept an error's first line: a raw newline in a
    # name cut the reason off
    bad = tmp_path / "bad\nname.png"
    bad.write_bytes(b"junk")
    with pytest.raises(OSError) as err:
        read_image(bad)
    assert str(err.value) == (f"cannot decode image {tmp_path}/bad\\nname.png: not an image "
                              "of the formats read (PNG, JPEG, BMP, TIFF, WEBP, GIF, PPM)")
    _, failed = tiny_metric.score([bad])
    assert [f.error for f in failed] == [str(err.value)]
    with pytest.raises(FileNotFoundError, match=re.escape("gone\\r.png is missing")):
        read_image(tmp_path / "gone\r.png")
    from cprl_fast.data.base import IQADataset, Item
    from cprl_fast.data.transforms import test_transform

    thin = _save(Image.new("RGB", (20_000, 1)), tmp_path / "thin\n.png")
    with pytest.raises(ImageTooLarge) as err:  # a dataset's file, too thin to resize
        IQADataset("x", [Item(str(thin), 0.5, 50.0, "a")], test_transform(224))[0]
    assert str(err.value).startswith(f"{tmp_path}/thin\\n.png: image of 20000 x 1 px")


def test_an_image_too_thin_to_resize_is_refused_before_the_resize(tiny_run, tmp_path):
    # a 1 x 20000 px PNG is 143 bytes; resized to 32 px on its shorter side it would be
    # 32 x 640000 = 20.5 MP (224 px: 1 GP, about 3 GB as 8-bit RGB) before the centre crop
    import torch

    from cprl_fast.data.base import IQADataset, Item
    from cprl_fast.data.distortions import square
    from cprl_fast.data.transforms import test_transform

    thin = _save(Image.new("RGB", (20_000, 1), (90, 120, 200)), tmp_path / "thin.png")
    ok = _save(Image.fromarray(_twin()), tmp_path / "ok.png")
    metric = cprl_fast.create_metric(tiny_run / "best.pt", max_pixels=10**7)
    done, failed = metric.score([thin, ok])
    assert [n for n, _ in done] == [str(ok)] and [f.path for f in failed] == [str(thin)]
    assert "20000 x 1 px would have 20480000 pixels once its shorter side is resized to 32 px, " \
           "over the limit of 10000000" in failed[0].error  # fmt: skip
    with pytest.raises(ValueError, match="tensor of 20000 x 1 px would have"):
        metric(torch.rand(1, 3, 1, 20_000))
    assert metric(torch.rand(1, 3, 1, 100)).shape == (1,)  # 32 x 3200 px: under the limit
    dataset = IQADataset("x", [Item(str(thin), 0.5, 50.0, "a")], test_transform(224))
    with pytest.raises(ImageTooLarge, match=re.escape(f"{thin}: image of 20000 x 1 px")):
        dataset[0]  # a dataset's transform (the default limit) names the file
    with pytest.raises(ImageTooLarge, match=re.escape(f"image {thin} of 20000 x 1 px")):
        square(read_image(thin), 256, name=f"image {thin}")  # synthesize's references


def _bomb(path: Path, side: int) -> Path:
    """A tiny PNG whose header says ``side`` x ``side`` greyscale pixels (decoding it would
    need side**2 bytes and more)."""
    rows = zlib.compress(b"\0" * (side + 1) * 64)
    return _write_png(path, struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0), rows)


def test_only_raster_formats_are_opened_never_a_postscript_program(tmp_path, monkeypatch):
    # Pillow tells a format by content and renders EPS by running Ghostscript on the file's
    # PostScript: an EPS named like a photograph would be a program, run
    from PIL import EpsImagePlugin

    from cprl_fast.images import READ_FORMATS

    ran = []
    monkeypatch.setattr(EpsImagePlugin, "has_ghostscript", lambda: True)
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *a, **k: ran.append(a))
    eps = tmp_path / "photo.png"
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n%%EOF\n")
    assert Image.open(eps).format == "EPS"  # what Pillow alone makes of it
    message = f"cannot decode image {eps}: not an image of the formats read (PNG, JPEG, BMP,"
    with pytest.raises(OSError, match=re.escape(message)):
        read_image(eps)
    assert ran == []
    for fmt in READ_FORMATS:  # each format the library reads still reads
        path = _save(Image.fromarray(_twin()), tmp_path / f"twin.{fmt.lower()}", fmt)
        assert read_image(path).size == (W, H), fmt


def _empty_scans(side: int, n: int) -> bytes:
    """``n`` AC scans of the luma blocks of a ``side``-px JPEG that hold nothing but end-of-band
    runs: a 1-bit Huffman code for EOB14 (run of 2**14 + 14 bits), about 100 bytes each at any
    size, after a table defining that code."""
    dht = b"\xff\xc4" + struct.pack(">H", 20) + bytes([0x10, 1] + [0] * 15 + [0xE0])
    sos = b"\xff\xda" + struct.pack(">H", 8) + bytes([1, 1, 0x00, 1, 63, 0x00])
    bits = ("0" + "1" * 14) * (((side + 7) // 8) ** 2 // 32767 + 2)
    bits += "1" * (-len(bits) % 8)
    data = bytes(int(bits[i : i + 8], 2) for i in range(0, len(bits), 8))
    return dht + (sos + data.replace(b"\xff", b"\xff\x00")) * n


def test_a_jpeg_of_too_many_scans_is_refused_before_it_is_decoded(tmp_path, monkeypatch):
    # each scan costs libjpeg a pass over the image's blocks, however few bytes it holds:
    # 10,000 such scans (1.4 MB) took 43 s to decode at 8192 x 8192 on the 2-core VM
    from cprl_fast.images import MAX_JPEG_SCANS, MAX_JPEG_SEGMENTS, check_jpeg_scans

    def jpeg(path: Path, extra: int = 0, **kw) -> Path:
        img = Image.fromarray(np.repeat(np.repeat(_twin(), 4, 0), 4, 1))
        img.save(path, "JPEG", **kw)
        data = path.read_bytes()
        path.write_bytes(data[:-2] + _empty_scans(80, extra) + data[-2:])
        return path

    def scans(path: Path) -> int:
        with open(path, "rb") as fh:
            return check_jpeg_scans(fh)

    assert scans(jpeg(tmp_path / "baseline.jpg")) == 1
    assert scans(jpeg(tmp_path / "progressive.jpg", progressive=True)) == 10
    # the SOS marker's bytes inside metadata are skipped with their segment, never counted
    noted = jpeg(tmp_path / "noted.jpg", progressive=True, comment=b"\xff\xda" * 1000)
    assert scans(noted) == 10
    ok = jpeg(tmp_path / "ok.jpg", MAX_JPEG_SCANS - 10, progressive=True)
    assert scans(ok) == MAX_JPEG_SCANS and read_image(ok).size == (48, 80)
    evil = jpeg(tmp_path / "evil.jpg", MAX_JPEG_SCANS - 9, progressive=True)
    message = f"cannot decode image {evil}: a JPEG of more than {MAX_JPEG_SCANS} scans, refused"
    with pytest.raises(OSError, match=re.escape(message)):
        read_image(evil)
    # the walk itself stays brief: a run of fill bytes is one step, segments are counted
    data = (tmp_path / "progressive.jpg").read_bytes()
    (tmp_path / "fill.jpg").write_bytes(data[:-2] + b"\xff" * (1 << 22) + data[-2:])
    assert scans(tmp_path / "fill.jpg") == 10
    (tmp_path / "notes.jpg").write_bytes(data[:-2] + b"\xff\xfe\x00\x02" * MAX_JPEG_SEGMENTS
                                         + data[-2:])  # fmt: skip
    with pytest.raises(OSError, match=f"more than {MAX_JPEG_SEGMENTS} marker segments"):
        read_image(tmp_path / "notes.jpg")
    # a file system that cannot map files: the same count from the file's bytes
    import mmap

    def unmappable(*args, **kwargs):
        raise OSError(19, "No such device")

    monkeypatch.setattr(mmap, "mmap", unmappable)
    with open(tmp_path / "progressive.jpg", "rb") as fh:
        fh.seek(7)
        assert check_jpeg_scans(fh) == 10 and fh.tell() == 7
    with pytest.raises(OSError, match=re.escape(message)):
        read_image(evil)
    assert read_image(ok).size == (48, 80)


@pytest.mark.slow
def test_a_bomb_in_a_folder_is_one_failure_row_and_memory_stays_bounded(tiny_run, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    a = _twin()
    for k in range(3):
        Image.fromarray(np.roll(a, k, axis=1)).save(folder / f"ok{k}.png")
    _bomb(folder / "bomb.png", 20_000)  # 400 MP: 1.2 GB as RGB if it were decoded
    _bomb(folder / "big.png", 9_000)  # under Pillow's bomb limit, over ours (81 MP)
    code = ("import resource, sys; from cprl_fast_cli import main; rc = main(sys.argv[1:]); "
            "print('maxrss', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "
            "file=sys.stderr); sys.exit(rc)")  # fmt: skip

    def score(*paths):
        return subprocess.run([sys.executable, "-c", code, "score", *map(str, paths),
                               "--model", str(tiny_run / "best.pt")],
                              capture_output=True, text=True)  # fmt: skip

    r = score(folder)
    assert r.returncode == 1, r.stderr
    rows = r.stdout.splitlines()[1:]
    assert len(rows) == 5 and sum(row.split(",")[2] == "" for row in rows) == 3
    assert f"limit of {DEFAULT_MAX_PIXELS}" in r.stderr and "decompression bomb" in r.stderr
    plain = score(*(folder / f"ok{k}.png" for k in range(3)))
    assert plain.returncode == 0, plain.stderr

    def maxrss_mb(run) -> float:
        return int(run.stderr.split("maxrss")[1].split()[0]) / 1024

    # no image was decoded beyond its header (the 400 MP one would take 1.2 GB as RGB)
    assert maxrss_mb(r) < maxrss_mb(plain) + 200, (maxrss_mb(r), maxrss_mb(plain))


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mode=st.sampled_from(["1", "L", "P", "RGB", "RGBA", "LA", "CMYK", "I;16", "I", "F"]),
       h=st.integers(1, 40), w=st.integers(1, 40),
       name=st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\0"),
                    min_size=1, max_size=12))  # fmt: skip
def test_any_mode_size_and_name_scores_or_fails_in_one_row(tiny_metric, tmp_path, mode, h, w,
                                                           name):  # fmt: skip
    """The metric's score over files of every mode, size and name: a finite score in [0, 1],
    or one failure row; never an exception, never NaN."""
    rng = np.random.default_rng(h * 41 + w)
    a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    img = Image.fromarray(a)
    img = {"I;16": lambda: Image.fromarray(a[..., 0].astype(np.uint16) * 257),
           "I": lambda: Image.fromarray(a[..., 0].astype(np.int32)),
           "F": lambda: Image.fromarray(a[..., 0].astype(np.float32) / 255)}.get(
        mode, lambda: img.convert(mode))()  # fmt: skip
    fmt = "TIFF" if mode in ("CMYK", "I", "F") else "PNG"
    folder = tmp_path / f"{mode}-{h}-{w}-{len(name)}"
    folder.mkdir(exist_ok=True)
    path = folder / (name.strip(".") or "x")
    try:
        path = path.with_name(path.name + ".png" if fmt == "PNG" else path.name + ".tif")
        img.save(path, fmt)
    except (OSError, ValueError):  # a name the file system refuses
        return
    done, failed = tiny_metric.score([folder])
    assert len(done) + len(failed) == 1
    for _, s in done:
        assert 0.0 <= s <= 1.0
