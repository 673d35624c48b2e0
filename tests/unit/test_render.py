"""Frames rendered as PNG: every compressed sample decodes to a valid PNG, the window
arithmetic is the linear VOI function after the modality LUT, lossless syntaxes give the
same pixels as the uncompressed object, colour comes out as RGB, frames can be walked,
and every failure is a RenderError with a reason."""

from __future__ import annotations

import io
import statistics
import struct
import time
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pydicom
import pytest

from shared.dicom.render import RenderError, encode_png, frame_count, render_png
from tests.conftest import SAMPLES

PYDICOM = SAMPLES / "pydicom" / "test_files"
PYDICOM_DATA = SAMPLES / "pydicom-data"

UNCOMPRESSED = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2",
                "1.2.840.10008.1.2.1.99"}
# Compressed samples that cannot be rendered, and why.
UNRENDERABLE = {
    "JPEG-lossy.dcm": "cannot be decoded",  # 12-bit JPEG that libjpeg refuses
    "JPEG2000-embedded-sequence-delimiter.dcm": "cannot be decoded",
    "liver_deflate.dcm": "no decoder",  # Deflated Image Frame Compression, newer than pydicom
    "emri_small_jpeg_2k_lossless_too_short.dcm": "no pixel data",  # fragments cut off
}


def _dataset(path: Path) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path, force=True)


def _compressed_samples() -> list[Path]:
    found = []
    for path in sorted(SAMPLES.rglob("*.dcm")):
        ds = _dataset(path)
        syntax = getattr(ds, "file_meta", pydicom.Dataset()).get("TransferSyntaxUID")
        if syntax and str(syntax) not in UNCOMPRESSED and (
                "PixelData" in ds or path.name in UNRENDERABLE):
            found.append(path)
    return found


def read_png(png: bytes) -> tuple[np.ndarray, int, int]:
    """Pixels, bit depth and colour type of a PNG, every chunk's CRC checked."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, []
    while pos < len(png):
        (length,) = struct.unpack_from(">L", png, pos)
        kind, payload = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack_from(">L", png, pos + 8 + length)
        assert crc == zlib.crc32(kind + payload)
        chunks.append((kind, payload))
        pos += 12 + length
    assert chunks[0][0] == b"IHDR" and chunks[-1] == (b"IEND", b"")
    width, height, depth, colour, _, _, _ = struct.unpack(">LLBBBBB", chunks[0][1])
    raw = zlib.decompress(b"".join(p for k, p in chunks if k == b"IDAT"))
    channels = {0: 1, 2: 3}[colour]
    lines = np.frombuffer(raw, dtype=np.uint8).reshape(height, 1 + width * channels)
    assert not lines[:, 0].any()  # filter 0 on every row
    pixels = lines[:, 1:].reshape(height, width, channels)
    return (pixels[:, :, 0] if channels == 1 else pixels), depth, colour


def _render(path: Path, frame: int = 0, **window: float) -> np.ndarray:
    pixels, depth, _ = read_png(render_png(path.read_bytes(), frame, **window))
    assert depth == 8
    return pixels


def _window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """The linear VOI function, written out independently of the module."""
    scaled = (values.astype(np.float64) - (center - width / 2)) / width * 255
    return np.rint(np.clip(scaled, 0, 255)).astype(np.uint8)


@pytest.mark.parametrize("path", _compressed_samples(), ids=lambda p: p.name)
def test_every_compressed_sample_renders_to_a_valid_png(path: Path) -> None:
    data = path.read_bytes()
    if path.name in UNRENDERABLE:
        with pytest.raises(RenderError, match=UNRENDERABLE[path.name]):
            render_png(data)
        return
    ds = _dataset(path)
    pixels, depth, colour = read_png(render_png(data))
    assert depth == 8
    assert pixels.shape[:2] == (ds.Rows, ds.Columns)
    colour_expected = ds.SamplesPerPixel == 3 or ds.PhotometricInterpretation == "PALETTE COLOR"
    assert colour == (2 if colour_expected else 0)
    assert pixels.max() > pixels.min()  # an image, not a blank


def test_the_compressed_samples_cover_every_decoder() -> None:
    syntaxes = {str(_dataset(p).file_meta.TransferSyntaxUID) for p in _compressed_samples()}
    assert {
        "1.2.840.10008.1.2.4.50",  # JPEG baseline
        "1.2.840.10008.1.2.4.51",  # JPEG extended
        "1.2.840.10008.1.2.4.70",  # JPEG lossless
        "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81",  # JPEG-LS
        "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91",  # JPEG 2000
        "1.2.840.10008.1.2.4.203",  # HTJ2K
        "1.2.840.10008.1.2.5",  # RLE
    } <= syntaxes


def test_the_window_maps_centre_to_mid_grey_and_clips_outside() -> None:
    path = PYDICOM / "CT_small.dcm"  # signed 16-bit, intercept -1024, no window of its own
    ds = _dataset(path)
    hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    center, width = 40.0, 400.0
    grey = _render(path, center=center, width=width)
    assert np.array_equal(grey, _window(hu, center, width))
    # A pixel at the centre is mid-grey; below centre - width/2 black, above centre +
    # width/2 white.
    y, x = np.argwhere(hu == np.median(hu))[0]
    assert _render(path, center=float(hu[y, x]), width=width)[y, x] == 128
    assert not grey[hu <= center - width / 2].any()
    assert (grey[hu >= center + width / 2] == 255).all()
    # Without a window: the frame's own range, minimum black and maximum white.
    full = _render(path)
    assert full[hu == hu.min()].max() == 0 and full[hu == hu.max()].min() == 255
    assert np.array_equal(full, _window(hu, (hu.min() + hu.max()) / 2, hu.max() - hu.min()))


def test_the_object_window_is_used_when_none_is_asked() -> None:
    path = PYDICOM / "MR_small.dcm"  # Window Center 600, Width 1600
    values = _dataset(path).pixel_array
    assert np.array_equal(_render(path), _window(values, 600, 1600))
    # One of the two given: the other is the object's.
    assert np.array_equal(_render(path, width=100.0), _window(values, 600, 100))


def test_enhanced_objects_take_rescale_and_window_from_functional_groups() -> None:
    path = PYDICOM_DATA / "eCT_Supplemental.dcm"  # shared groups: intercept -1024, 49/102
    ds = _dataset(path)
    hu = pydicom.pixels.pixel_array(ds, index=1).astype(np.float64) - 1024
    assert np.array_equal(_render(path, 1), _window(hu, 49, 102))


def test_monochrome1_is_inverted() -> None:
    path = SAMPLES / "highdicom" / "dx_image.dcm"
    values = _dataset(path).pixel_array
    assert np.array_equal(_render(path, center=100.0, width=50.0),
                          255 - _window(values, 100, 50))


@pytest.mark.parametrize(
    ("reference", "others"),
    [
        (PYDICOM / "MR_small.dcm",
         ["MR_small_bigendian.dcm", "MR_small_implicit.dcm", "MR_small_RLE.dcm",
          "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm"]),
        (PYDICOM_DATA / "emri_small.dcm",
         ["emri_small_big_endian.dcm", "emri_small_RLE.dcm", "emri_small_jpeg_ls_lossless.dcm"]),
        (PYDICOM / "liver_1frame.dcm", ["liver_expb_1frame.dcm"]),
    ],
    ids=["MR_small", "emri_small", "liver"],
)
def test_lossless_syntaxes_render_the_same_pixels(reference: Path, others: list[str]) -> None:
    frames = frame_count(reference.read_bytes())
    expected = [_render(reference, f) for f in range(frames)]
    for name in others:
        path = reference.parent / name
        assert frame_count(path.read_bytes()) == frames, name
        assert all(np.array_equal(_render(path, f), expected[f]) for f in range(frames)), name


def test_frames_of_a_multi_frame_object_can_be_walked() -> None:
    path = PYDICOM_DATA / "emri_small_RLE.dcm"
    data = path.read_bytes()
    assert frame_count(data) == 10
    every = _dataset(path).pixel_array
    rendered = [_render(path, f) for f in range(10)]
    for f, grey in enumerate(rendered):
        values = every[f].astype(np.float64)
        lo, hi = values.min(), values.max()
        assert np.array_equal(grey, _window(values, (lo + hi) / 2, hi - lo)), f
    assert len({g.tobytes() for g in rendered}) == 10
    for frame in (10, -1):
        with pytest.raises(RenderError, match="out of range"):
            render_png(data, frame)


def test_frame_count_is_zero_without_pixel_data() -> None:
    assert frame_count((PYDICOM / "rtplan.dcm").read_bytes()) == 0
    assert frame_count((PYDICOM / "CT_small.dcm").read_bytes()) == 1
    assert frame_count((PYDICOM / "examples_ybr_color.dcm").read_bytes()) == 30


# The colour bar samples: ten bands of ten rows, red, light red, green, light green, blue,
# light blue, black, dark grey, light grey, white.
_BANDS = {0: (255, 0, 0), 2: (0, 255, 0), 4: (0, 0, 255), 6: (0, 0, 0), 9: (255, 255, 255)}


@pytest.mark.parametrize(
    ("name", "tolerance"),
    [("SC_rgb_rle.dcm", 0), ("SC_rgb_rle_16bit.dcm", 0), ("SC_rgb_rle_32bit.dcm", 0),
     ("SC_rgb_dcmtk_+eb+cr.dcm", 8), ("SC_rgb_dcmtk_+eb+cy+n1.dcm", 8),
     ("SC_rgb_dcmtk_+eb+cy+np.dcm", 8), ("SC_ybr_full_422_uncompressed.dcm", 8),
     ("SC_rgb_jpeg_gdcm.dcm", 0), ("SC_rgb_gdcm_KY.dcm", 8),
     ("SC_rgb_jls_lossy_line.dcm", 8), ("SC_rgb_rle_2frame.dcm", 0)],
)
def test_colour_comes_out_as_rgb(name: str, tolerance: int) -> None:
    rgb = _render(PYDICOM / name)
    assert rgb.shape == (100, 100, 3)
    for band, colour in _BANDS.items():
        centre = rgb[band * 10 + 5, 50].astype(int)
        assert np.abs(centre - colour).max() <= tolerance, (band, centre)


def test_palette_colour_is_looked_up() -> None:
    rgb = _render(PYDICOM_DATA / "OT-PAL-8-face.dcm")  # a bare data set, implicit VR
    assert rgb.shape == (480, 640, 3)
    assert (rgb[..., 0] != rgb[..., 2]).mean() > 0.5  # colour, not grey


@pytest.mark.parametrize(
    ("path", "frame", "window", "reason"),
    [
        (PYDICOM / "rtplan.dcm", 0, {}, "no pixel data"),
        (PYDICOM / "CT_small.dcm", 1, {}, "out of range"),
        (PYDICOM_DATA / "liver_deflate.dcm", 0, {}, "no decoder"),
        (PYDICOM / "JPEG-lossy.dcm", 0, {}, "cannot be decoded"),
        (PYDICOM / "MR_truncated.dcm", 0, {}, "cannot be decoded"),
        (SAMPLES / "synthetic-broken" / "truncated_in_pixel_data.dcm", 0, {},
         "cannot be decoded"),
        (PYDICOM / "CT_small.dcm", 0, {"width": 0.0}, "width"),
        (PYDICOM / "CT_small.dcm", 0, {"width": -10.0}, "width"),
        (PYDICOM / "CT_small.dcm", 0, {"width": float("nan")}, "width"),
        (PYDICOM / "CT_small.dcm", 0, {"center": float("inf")}, "centre"),
    ],
    ids=["no-pixels", "frame", "no-decoder", "libjpeg-refuses", "truncated",
         "truncated-synthetic", "width-0", "width-negative", "width-nan", "centre-inf"],
)
def test_failures_are_render_errors_with_a_reason(
    path: Path, frame: int, window: dict[str, float], reason: str
) -> None:
    with pytest.raises(RenderError, match=reason) as caught:
        render_png(path.read_bytes(), frame, **window)
    assert "CompressedSamples" not in str(caught.value)  # no value of the object


def test_a_frame_announcing_gigabytes_is_refused_before_decoding() -> None:
    ds = _dataset(PYDICOM / "JPEG2000.dcm")
    ds.Rows = ds.Columns = 16384  # 268 million pixels from 266 bytes of JPEG 2000
    buffer = io.BytesIO()
    ds.save_as(buffer)
    with pytest.raises(RenderError, match="too large"):
        render_png(buffer.getvalue())


@pytest.mark.parametrize("path", sorted((SAMPLES / "synthetic-broken").iterdir()),
                         ids=lambda p: p.name)
def test_broken_files_raise_only_render_errors(path: Path) -> None:
    data = path.read_bytes()
    try:
        if frame_count(data):
            read_png(render_png(data))
    except RenderError as exc:
        assert str(exc)


def test_renders_in_threads_match_serial_renders() -> None:
    paths = [PYDICOM / "CT_small.dcm", PYDICOM / "JPEG2000.dcm", PYDICOM / "SC_rgb_jpeg.dcm",
             PYDICOM_DATA / "JPEG-LL.dcm", PYDICOM_DATA / "emri_small_RLE.dcm"]
    jobs = [(p.read_bytes(), f % frame_count(p.read_bytes())) for p in paths for f in range(4)]
    serial = [render_png(data, frame) for data, frame in jobs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        threaded = list(pool.map(lambda job: render_png(*job), jobs * 3))
    assert threaded == serial * 3


def test_a_512_ct_frame_renders_quickly() -> None:
    data = (SAMPLES / "rt-utils" / "mock_data" / "ct_1.dcm").read_bytes()  # 512x512, 16-bit
    render_png(data)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        render_png(data)
        times.append(time.perf_counter() - start)
    # Typically under 15 ms; the bound only catches a slow path (a Python loop per pixel).
    assert statistics.median(times) < 0.25


def test_encode_png_writes_grey_and_rgb() -> None:
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    pixels, depth, colour = read_png(encode_png(grey))
    assert (depth, colour) == (8, 0) and np.array_equal(pixels, grey)
    rgb = np.arange(24, dtype=np.uint8).reshape(2, 4, 3)
    pixels, depth, colour = read_png(encode_png(rgb))
    assert (depth, colour) == (8, 2) and np.array_equal(pixels, rgb)
    with pytest.raises(ValueError):
        encode_png(np.zeros((2, 2), dtype=np.uint16))  # type: ignore[arg-type]


def test_an_invalid_vr_where_rendering_reads_is_a_render_error() -> None:
    # pydicom raises NotImplementedError for an unknown VR only when the element is used.
    data = bytearray((PYDICOM / "CT_small.dcm").read_bytes())
    rows = data.find(b"\x28\x00\x10\x00US")
    data[rows + 4 : rows + 6] = b"U\x9a"
    for call in (frame_count, render_png):
        with pytest.raises(RenderError, match="cannot be read"):
            call(bytes(data))
    # Inside a functional group the value is only left out: the frame still renders.
    enhanced = bytearray((PYDICOM_DATA / "eCT_Supplemental.dcm").read_bytes())
    slope = enhanced.find(b"\x28\x00\x53\x10DS")  # RescaleSlope, in an item
    assert slope > 0
    enhanced[slope + 4 : slope + 6] = b"Q\x01"
    assert read_png(render_png(bytes(enhanced)))[0].shape == (512, 512)
