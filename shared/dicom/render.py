"""One frame of a DICOM object as a PNG an operator can look at (the Viewer of the RSNA
Anonymizer): monochrome as 8-bit grey through the modality LUT and a linear VOI window,
colour as 8-bit RGB.

De-identification copies pixel data byte for byte and never looks at it, so an operator
checking an object for burned-in text has to see the image itself; this module is the
only place the project decodes pixels. Decoding is pydicom's pixel handlers with the
pylibjpeg plugins (libjpeg for JPEG baseline, extended, lossless and JPEG-LS; openjpeg for
JPEG 2000 and HTJ2K; pydicom's own or pylibjpeg-rle's RLE): well-kept decoders, where a
home-made one would get the corner cases of real files wrong. What follows decoding is
done here, with numpy, because it is what decides what the operator sees:

- the modality LUT: Rescale Slope and Intercept (or a Modality LUT Sequence), from the
  frame's functional groups in an enhanced multi-frame object, else the top level;
- the VOI window, linear: the centre and width asked for, else the object's first
  Window Center/Width (same places), else the frame's own minimum and maximum; stored
  values map to ``(value - (centre - width / 2)) / width`` of the grey range, clipped;
- MONOCHROME1 inverted (its zero is white); PALETTE COLOR through its palette; YBR
  converted to RGB (by the decoder or pydicom); samples wider than 8 bits cut to their
  top 8.

The PNG is written here too (8-bit grey or RGB, filter 0, one zlib stream): a few lines
of :mod:`struct` and :mod:`zlib` instead of an imaging library.

Every function is pure (no module state is written): the caller runs them in threads.
Errors are :class:`RenderError` with a message naming what is wrong, never a value of the
object; messages of the toolkit underneath (which may quote values) are not passed on.
"""

from __future__ import annotations

import math
import struct
import zlib
from io import BytesIO
from typing import Any

import numpy as np
import numpy.typing as npt
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

# zlib level of the PNG stream. On a noisy 512x512 CT frame, level 1 takes 4 ms and level
# 6 (zlib's default) 18 ms for a file only 7% smaller: the viewer waits on the time.
PNG_COMPRESSION_LEVEL = 1

# Frames with more samples than this (rows x columns x samples per pixel) are refused
# before they are decoded: a few header bytes can announce gigabytes. 2^26 is an 8192x8192
# grey frame, rendered in about 1 GB of memory; the largest radiographs (mammograms near
# 4096x5600) are well below it.
MAX_FRAME_SAMPLES = 1 << 26

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_GREY, _RGB = 0, 2  # PNG colour types


class RenderError(ValueError):
    """The frame cannot be rendered; the message says why without repeating any value."""


def frame_count(data: bytes) -> int:
    """The number of frames of the object's pixel data, 0 when it has none.

    Raises :class:`RenderError` when the bytes cannot be read as DICOM at all.
    """
    ds = _read(data)
    if _pixel_keyword(ds) is None:
        return 0
    return _frames(ds)


def render_png(
    data: bytes,
    frame: int = 0,
    center: float | None = None,
    width: float | None = None,
) -> bytes:
    """A PNG of ``frame`` (0-based). ``center`` and ``width`` set the VOI window of a
    monochrome frame (ignored for colour); each one left out is the object's own.

    Raises :class:`RenderError` for no pixel data, a frame out of range, a transfer
    syntax without a decoder, pixel data that cannot be decoded, a frame larger than
    :data:`MAX_FRAME_SAMPLES`, and a window width that is not a positive number.
    """
    if width is not None and not (math.isfinite(width) and width > 0):
        raise RenderError("the window width must be a number greater than 0")
    if center is not None and not math.isfinite(center):
        raise RenderError("the window centre must be a finite number")
    ds = _read(data)
    if _pixel_keyword(ds) is None:
        raise RenderError("the object has no pixel data")
    frames = _frames(ds)
    if not 0 <= frame < frames:
        raise RenderError(f"frame {frame} is out of range: the object has {frames} frames")
    _check_size(ds)
    pixels, properties = _decode(ds, frame)
    photometric = str(properties.get("photometric_interpretation", ""))
    samples = int(properties.get("samples_per_pixel", 1))
    if pixels.ndim == 2 and samples == 1:
        if photometric == "PALETTE COLOR":
            image = _palette(pixels, ds)
        else:
            image = _grey(pixels, ds, frame, center, width, photometric == "MONOCHROME1")
    elif pixels.ndim == 3 and pixels.shape[2] == 3:
        if photometric not in ("RGB", ""):
            raise RenderError("the colour space of the pixel data is not supported")
        image = _to_8_bits(pixels, int(properties.get("bits_stored", 8)))
    else:
        raise RenderError("the pixel data has a number of samples that cannot be shown")
    return encode_png(image)


def encode_png(image: npt.NDArray[np.uint8]) -> bytes:
    """An 8-bit PNG of a (rows, columns) grey or (rows, columns, 3) RGB image."""
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError("encode_png takes 8-bit grey or RGB images")
    rows, columns = image.shape[:2]
    channels = 1 if image.ndim == 2 else image.shape[2]
    if channels not in (1, 3) or rows == 0 or columns == 0:
        raise ValueError("encode_png takes 8-bit grey or RGB images of at least one pixel")
    # Each row is prefixed by its filter type, 0 (None).
    scanlines = np.zeros((rows, 1 + columns * channels), dtype=np.uint8)
    scanlines[:, 1:] = image.reshape(rows, columns * channels)
    header = struct.pack(">LLBBBBB", columns, rows, 8, _GREY if channels == 1 else _RGB,
                         0, 0, 0)
    body = zlib.compress(scanlines.tobytes(), PNG_COMPRESSION_LEVEL)
    return _PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", body) + _chunk(b"IEND", b"")


def _chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(payload, zlib.crc32(kind))
    return struct.pack(">L", len(payload)) + kind + payload + struct.pack(">L", crc)


def _read(data: bytes) -> Dataset:
    if not data:
        raise RenderError("the object is empty")
    try:
        # force: bare data sets (no preamble, no file meta) are objects too.
        ds = dcmread(BytesIO(data), force=True)
        # pydicom converts an element when it is first used, and only then raises for an
        # invalid VR or value: the elements read below (image pixel module, pixel data)
        # are converted here, where a failure is a RenderError.
        for tag in list(ds.keys()):
            if tag.group in (0x0028, 0x7FE0):
                _ = ds[tag]
    except Exception as exc:  # the toolkit raises many kinds on broken input
        raise RenderError(f"the object cannot be read ({exc.__class__.__name__})") from None
    return ds


def _pixel_keyword(ds: Dataset) -> str | None:
    return next((k for k in _PIXEL_KEYWORDS if k in ds), None)


def _frames(ds: Dataset) -> int:
    """Number of Frames, 1 when absent or not a positive number (as pydicom reads it)."""
    try:
        value = int(ds.get("NumberOfFrames") or 1)
    except (ValueError, TypeError, OverflowError):
        return 1
    return value if value > 0 else 1


def _check_size(ds: Dataset) -> None:
    try:
        samples = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel") or 1)
    except (AttributeError, ValueError, TypeError, OverflowError):
        return  # the decoder says what is missing or wrong
    if samples > MAX_FRAME_SAMPLES:
        raise RenderError(
            f"the frame is too large to render (more than {MAX_FRAME_SAMPLES} samples)"
        )


def _transfer_syntax(ds: Dataset) -> str:
    """The object's transfer syntax; for a bare data set, the encoding it was read in."""
    meta = getattr(ds, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    if uid:
        return str(uid)
    implicit, little = ds.original_encoding
    if implicit is None or little is None:
        raise RenderError("the object does not say how its pixel data is encoded")
    if implicit:
        return str(ImplicitVRLittleEndian)
    return str(ExplicitVRLittleEndian if little else ExplicitVRBigEndian)


def _decode(ds: Dataset, frame: int) -> tuple[npt.NDArray[Any], dict[str, Any]]:
    uid = _transfer_syntax(ds)
    name = UID(uid).name
    described = f"transfer syntax {name}" if name != uid else "its transfer syntax"
    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        raise RenderError(f"no decoder for {described}") from None
    if not decoder.is_available:
        raise RenderError(f"no decoder installed for {described}")
    ds.ensure_file_meta()
    ds.file_meta.TransferSyntaxUID = UID(uid)  # a bare data set: say what it was read as
    try:
        # Bits above Bits Stored are not the pixel's (overlays, garbage): cleared, or the
        # sign extended.
        options: dict[str, Any] = {"correct_unused_bits": True}
        pixels, properties = decoder.as_array(ds, index=frame, **options)
    except Exception as exc:  # every decoding plugin has its own errors
        raise RenderError(
            f"the pixel data cannot be decoded ({exc.__class__.__name__})"
        ) from None
    if pixels.size == 0:
        raise RenderError("the pixel data has no rows or no columns")
    return pixels, properties


def _grey(
    pixels: npt.NDArray[Any],
    ds: Dataset,
    frame: int,
    center: float | None,
    width: float | None,
    inverted: bool,
) -> npt.NDArray[np.uint8]:
    values = _modality(pixels, ds, frame)
    if center is None:
        center = _number(ds, frame, "FrameVOILUTSequence", "WindowCenter")
    if width is None:
        width = _number(ds, frame, "FrameVOILUTSequence", "WindowWidth")
        if width is not None and width <= 0:
            width = None  # the object's own is unusable: fall back to the frame's range
    finite = np.isfinite(values)
    if not finite.all():  # float pixel data may hold NaN or infinities: show them black
        values = np.where(finite, values, np.nan)
    if center is None or width is None:
        if not finite.any():
            return np.zeros(values.shape, dtype=np.uint8)
        low, high = float(np.nanmin(values)), float(np.nanmax(values))
        if high <= low:
            return np.zeros(values.shape, dtype=np.uint8)
        center, width = (low + high) / 2, high - low
    grey = _window(values, center, width)
    if inverted:
        np.subtract(255, grey, out=grey)
    return grey


def _window(values: npt.NDArray[np.float64], center: float, width: float) -> npt.NDArray[np.uint8]:
    """The linear VOI function: centre - width/2 and below to 0, centre + width/2 and
    above to 255 (NaN to 0)."""
    scaled = values - (center - width / 2)
    scaled /= width
    scaled *= 255.0
    np.nan_to_num(scaled, copy=False, nan=0.0)
    np.clip(scaled, 0.0, 255.0, out=scaled)
    np.rint(scaled, out=scaled)
    return scaled.astype(np.uint8)


def _modality(pixels: npt.NDArray[Any], ds: Dataset, frame: int) -> npt.NDArray[np.float64]:
    """Stored values through the modality LUT (PS3.3 C.11.1), as floats."""
    if "ModalityLUTSequence" in ds:
        try:
            return np.asarray(apply_modality_lut(pixels, ds), dtype=np.float64)
        except Exception as exc:  # a broken LUT
            raise RenderError(
                f"the modality LUT cannot be applied ({exc.__class__.__name__})"
            ) from None
    values = pixels.astype(np.float64)
    slope = _number(ds, frame, "PixelValueTransformationSequence", "RescaleSlope")
    intercept = _number(ds, frame, "PixelValueTransformationSequence", "RescaleIntercept")
    if slope is not None and slope != 1.0:
        values *= slope
    if intercept:
        values += intercept
    return values


def _number(ds: Dataset, frame: int, macro: str, keyword: str) -> float | None:
    """The first value of ``keyword`` for ``frame``: in the frame's functional group
    ``macro``, else the shared one, else at the top level; None when absent or not a
    finite number."""
    try:
        places: list[Dataset] = []
        per_frame = ds.get("PerFrameFunctionalGroupsSequence")
        if per_frame and frame < len(per_frame):
            places.append(per_frame[frame])
        shared = ds.get("SharedFunctionalGroupsSequence")
        if shared:
            places.append(shared[0])
        for groups in places:
            sequence = groups.get(macro)
            if sequence and keyword in sequence[0]:
                return _first_finite(sequence[0].get(keyword))
        return _first_finite(ds.get(keyword))
    except (ValueError, TypeError, AttributeError, IndexError, KeyError, OverflowError,
            NotImplementedError):  # NotImplementedError: pydicom's word for an invalid VR
        return None


def _first_finite(value: Any) -> float | None:
    if isinstance(value, MultiValue | list | tuple):
        value = value[0] if len(value) else None
    if value is None or value == "":
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _palette(pixels: npt.NDArray[Any], ds: Dataset) -> npt.NDArray[np.uint8]:
    try:
        rgb = apply_color_lut(pixels, ds)
    except Exception as exc:  # a missing or inconsistent palette
        raise RenderError(
            f"the palette colour LUT cannot be applied ({exc.__class__.__name__})"
        ) from None
    rgb = rgb[..., :3]  # an alpha LUT is not shown
    if rgb.dtype.itemsize == 1:
        return np.ascontiguousarray(rgb, dtype=np.uint8)
    # 16-bit LUT entries; some writers put 8-bit values in them, which would show black.
    bits = 16 if int(rgb.max(initial=0)) > 255 else 8
    return _to_8_bits(rgb, bits)


def _to_8_bits(pixels: npt.NDArray[Any], bits_stored: int) -> npt.NDArray[np.uint8]:
    """Colour samples of ``bits_stored`` bits as 8-bit ones (their top 8 bits)."""
    if pixels.dtype == np.uint8 and bits_stored <= 8:
        return np.ascontiguousarray(pixels)
    shift = max(bits_stored - 8, 0)
    if pixels.dtype.kind == "f":
        scaled = np.clip(np.rint(pixels / float(2**shift)), 0, 255)
        return np.asarray(scaled, dtype=np.uint8)
    wide = np.asarray(pixels, dtype=np.uint64) >> np.uint64(shift)
    return np.asarray(np.minimum(wide, 255), dtype=np.uint8)
