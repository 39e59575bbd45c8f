"""Decoding image files with Pillow: which suffixes are images, sizes from the file header,
pixels as RGB or one grayscale channel, palette colours to class indices; resizing an image
and its mask. Data preparation and `im-core segment` read images only through here, so both
follow the same rules:

Bit depth (the `intensity_range` setting, one rule for a whole data set). 8-bit images (Pillow
modes 1, L, P, RGB, RGBA, CMYK, ...) are taken as they are. Images with more than 8 bits per
sample (16-bit grayscale and RGB(A) PNG and TIFF, 32-bit integer TIFF) and float images (float
TIFF, Pillow mode F) are scaled linearly to 0..255, v -> round((v - low) * 255 / (high - low)):
  auto (default)  16-bit: low, high = 0, 65535; float: 0, 1; 32-bit integer: 0, 65535 (16-bit
                  data in a 32-bit container; a value outside that is an error)
  dtype           the container's full range: 16-bit 0..65535, 32-bit integer -2**31..2**31-1,
                  float 0..1
  [low, high]     the given range; values outside it are clipped to it
Under auto and dtype a value outside the range (a float above 1, NaN) is an error naming the file:
nothing is saturated or zeroed silently. The range is the same for every image, so two images of a
data set are never scaled differently. 16-bit images whose values all lie below 4096 (12-bit
cameras write such files) come out dark under auto; they are named in a warning that suggests
`intensity_range: [0, 4095]`. Masks are class indices and are never scaled (masks.py).

Pillow reads 16-bit RGB(A) PNG and TIFF files as 8-bit RGB (their top byte): such files are decoded a
second time with the other byte order, which gives the low bytes, so the full 16 bits are used.
TIFFs Pillow cannot open (float RGB, float64, ...) are read with tifffile; a file that can be read
neither way, or only in part (16-bit grayscale with alpha), is an error naming it.

Orientation: an image (and a mask) is read at its displayed orientation, its EXIF orientation
applied as Pillow's `ImageOps.exif_transpose` does; sizes from the header are the displayed ones.

Large images: an image of more pixels than the limit (`max_image_pixels`; default Pillow's
`Image.MAX_IMAGE_PIXELS`, 89,478,485) is an error naming the file and its pixel count, instead of
Pillow's decompression-bomb warning or error (see `reading_images`).
"""
from __future__ import annotations

import contextlib
import functools
import logging
import re
import struct
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import InputError, few_names

log = logging.getLogger("im_core.data")

NOT_IMAGE_FORMATS = ("BUFR", "GRIB", "HDF5", "MPEG")  # data and video containers Pillow only identifies
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")  # more than 8 bits: read as their values
TIFF_SUFFIXES = (".tif", ".tiff")
TWELVE_BIT = 4096        # a 16-bit image whose values all lie below this looks like 12-bit data
ORIENTATION_TAG = 0x0112
TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
             5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
             8: Image.Transpose.ROTATE_90}  # EXIF orientation -> Pillow transpose, as ImageOps.exif_transpose
SWAPS_SIDES = (5, 6, 7, 8)


# ---------------------------------------------------------------- the intensity rule

@dataclass(frozen=True)
class Intensity:
    """How images of more than 8 bits are scaled to 0..255 (module docstring): `rule` auto, dtype
    or range (with `low`, `high`); `key` is the setting, for messages."""
    rule: str = "auto"
    low: float | None = None
    high: float | None = None
    key: str = "intensity_range"

    def describe(self) -> str:
        return f"[{self.low:g}, {self.high:g}]" if self.rule == "range" else self.rule

    def suggest(self, low: int, high: int) -> str:
        return f"{self.key} {low},{high}" if self.key.startswith("--") else f"{self.key}: [{low}, {high}]"


AUTO = Intensity()


def intensity_rule(value, key: str = "intensity_range") -> Intensity:
    """The rule of an `intensity_range` setting: "auto", "dtype", [low, high] (or "low,high", as
    the command line gives it); anything else is an error naming `key`."""
    if value is None:
        value = "auto"
    if isinstance(value, str) and value in ("auto", "dtype"):
        return Intensity(value, key=key)
    pair = value
    if isinstance(value, str):
        pair = [p for p in re.split(r"[,:\s]+", value.strip().strip("[]")) if p]
    try:
        low, high = (float(v) for v in pair)
        if isinstance(value, (list, tuple)) and any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value):
            raise TypeError
    except (TypeError, ValueError):
        raise InputError(f"{key}: {value!r} is not auto, dtype or [low, high] (two numbers, e.g. [0, 4095] for "
                         "12-bit data)") from None
    if not (np.isfinite(low) and np.isfinite(high)) or low >= high:
        raise InputError(f"{key}: [{low:g}, {high:g}]: low must be below high (low becomes 0 and high 255)")
    return Intensity("range", low, high, key)


# ---------------------------------------------------------------- the pixel limit and warnings of a run

@dataclass
class _Reading:
    limit: int | None
    limit_key: str
    low_bits: list[tuple[str, str, str]] = field(default_factory=list)   # (intensity key, rule, file)


_ACTIVE: _Reading | None = None
_ACTIVE_LOCK = threading.Lock()


@contextlib.contextmanager
def reading_images(max_pixels: int | None = None, limit_key: str = "max_image_pixels") -> Iterator[None]:
    """While active (data preparation, segment; the reading threads share it): images of more
    than `max_pixels` pixels (None: Pillow's `Image.MAX_IMAGE_PIXELS` as it is now) are an
    InputError naming the file, its pixel count and `limit_key`, the setting that raises the
    limit; Pillow's own check, which warns or fails without naming the file, is off meanwhile.
    On a normal exit the 16-bit images that look like 12-bit data are named in one warning."""
    global _ACTIVE
    saved = Image.MAX_IMAGE_PIXELS
    reading = _Reading(saved if max_pixels is None else int(max_pixels), limit_key)
    with _ACTIVE_LOCK:
        outer, _ACTIVE = _ACTIVE, reading
        Image.MAX_IMAGE_PIXELS = None
    try:
        yield
        _warn_low_bits(reading.low_bits)
    finally:
        with _ACTIVE_LOCK:
            _ACTIVE = outer
            Image.MAX_IMAGE_PIXELS = saved


def _pixel_limit() -> tuple[int | None, str]:
    active = _ACTIVE
    if active is not None:
        return active.limit, active.limit_key
    return Image.MAX_IMAGE_PIXELS, "PIL.Image.MAX_IMAGE_PIXELS"


def _too_large(path: Path, width: int | None, height: int | None, pixels: int, limit, key: str) -> InputError:
    size = f"{width} x {height} = " if width else ""
    return InputError(f"{path}: {size}{pixels:,} pixels, more than the limit of {limit:,} pixels that guards against "
                      f"decompression bombs (small files that decode to huge images); if the image is genuine, raise "
                      f"{key} to at least {pixels} (decoding it takes about {pixels * 3 / 2**30:.1f} GiB or more)")


def _check_pixels(path: Path, width: int, height: int) -> None:
    limit, key = _pixel_limit()
    if limit is not None and width * height > limit:
        raise _too_large(path, width, height, width * height, limit, key)


def _note_low_bits(path: Path, intensity: Intensity) -> None:
    active = _ACTIVE
    if active is not None:
        active.low_bits.append((intensity.key, intensity.describe(), str(path)))
    else:
        _warn_low_bits([(intensity.key, intensity.describe(), str(path))])


def _warn_low_bits(notes: list[tuple[str, str, str]]) -> None:
    by_key: dict[tuple[str, str], list[str]] = {}
    for key, rule, path in notes:
        by_key.setdefault((key, rule), []).append(path)
    for (key, rule), paths in by_key.items():
        hint = Intensity(key=key).suggest(0, TWELVE_BIT - 1)
        log.warning("%s: %d 16-bit images hold no value above %d, so they look like 12-bit (or lower) data, and "
                    "under intensity_range %s their values are scaled from 0..65535 and come out dark (at most 15 "
                    "of 255): %s. If the data is 12-bit, set %s", key.removesuffix(".intensity_range"), len(paths),
                    TWELVE_BIT - 1, rule, few_names(sorted(set(paths))), hint)


# ---------------------------------------------------------------- opening and orientation

@functools.cache
def image_suffixes() -> dict[str, str]:
    """File suffix (lower case, with the dot) -> Pillow format, for every image format Pillow can
    open (do not modify the returned dict: it is shared)."""
    Image.init()
    return {ext.lower(): fmt for ext, fmt in Image.registered_extensions().items()
            if fmt in Image.OPEN and fmt not in NOT_IMAGE_FORMATS}


def _unreadable(path: Path, e: Exception, what: str = "image") -> InputError:
    return InputError(f"{path}: cannot read this {what} ({e}); replace or remove the file")


def open_image(path: Path) -> Image.Image:
    """Image.open with the pixel limit: too large an image is an InputError naming the file."""
    try:
        im = Image.open(path)
    except Image.DecompressionBombError as e:   # Pillow's own check (outside `reading_images`)
        limit, key = _pixel_limit()
        found = re.search(r"\((\d+) pixels\)", str(e))
        raise _too_large(path, None, None, int(found.group(1)) if found else 0, limit or 0, key) from None
    try:
        _check_pixels(path, im.width, im.height)
    except InputError:
        im.close()
        raise
    return im


def _png_late_metadata(path: Path) -> bool:
    """Whether a PNG file holds EXIF or text chunks after its pixels (reads the chunk headers
    only); Pillow sees those only once it has decoded the pixels."""
    with open(path, "rb") as f:
        if f.read(8) != b"\x89PNG\r\n\x1a\n":
            return False
        pixels_seen = False
        while len(head := f.read(8)) == 8:
            length, chunk = struct.unpack(">I4s", head)
            if chunk == b"IEND":
                return False
            pixels_seen = pixels_seen or chunk == b"IDAT"
            if pixels_seen and chunk in (b"eXIf", b"tEXt", b"zTXt", b"iTXt"):
                return True
            f.seek(length + 4, 1)
    return False


def orientation(im: Image.Image, path: Path) -> int:
    """The EXIF (or XMP) orientation (1..8; 1 = as stored) that ImageOps.exif_transpose would
    apply, from the header (a PNG with metadata after its pixels is decoded to read it)."""
    try:
        if im.format == "PNG" and _png_late_metadata(path):
            im.load()   # as ImageOps.exif_transpose, which loads the image before reading its EXIF
            exif = im.getexif()
        else:
            exif = Image.Image.getexif(im)   # PNG's own getexif would decode the pixels to look for one
        value = int(exif.get(ORIENTATION_TAG, 1))
    except Exception as e:  # noqa: BLE001 - a damaged EXIF block: the image as stored (as for no EXIF)
        log.debug("%s: unreadable EXIF (%s); orientation taken as stored", path, e)
        return 1
    return value if value in TRANSPOSE else 1


def _orient_array(a: np.ndarray, value: int) -> np.ndarray:
    """numpy's version of Pillow's transpose for EXIF orientation `value` (first two axes)."""
    return {1: lambda: a, 2: lambda: a[:, ::-1], 3: lambda: a[::-1, ::-1], 4: lambda: a[::-1],
            5: lambda: a.swapaxes(0, 1), 6: lambda: np.rot90(a, -1), 7: lambda: a.swapaxes(0, 1)[::-1, ::-1],
            8: lambda: np.rot90(a, 1)}[value]()


def image_header(path: Path) -> tuple[int, int, bool]:
    """(height, width, grayscale) from the file header, at the displayed orientation, without
    decoding the pixels."""
    try:
        with open_image(path) as im:
            h, w = im.height, im.width
            if orientation(im, path) in SWAPS_SIDES:
                h, w = w, h
            return h, w, im.mode in GRAY_MODES
    except UnidentifiedImageError as e:
        if path.suffix.lower() in TIFF_SUFFIXES:
            h, w, samples, _ = _tiff_header(path, e)
            return h, w, samples in (1, 2)
        raise _unreadable(path, e) from e
    except OSError as e:
        raise _unreadable(path, e) from e


# ---------------------------------------------------------------- decoding

def _rawmode(tile) -> str:
    args = tile[3]
    first = args[0] if isinstance(args, tuple) and args else args
    return first if isinstance(first, str) else ""


def _sixteen_bit_samples(im: Image.Image) -> str | None:
    """The raw mode of an image Pillow opens in an 8-bit mode from 16-bit samples (keeping only
    their top byte): 'RGB;16B' etc.; None for every other image."""
    if im.mode in WIDE_MODES:
        return None
    for tile in im.tile:
        rawmode = _rawmode(tile)
        if re.search(r";16[BLN]$", rawmode):
            return rawmode
    return None


def _with_rawmode(tile, rawmode: str):
    args = tile[3]
    args = rawmode if isinstance(args, str) else (rawmode, *args[1:])
    parts = (tile[0], tile[1], tile[2], args)
    return parts if type(tile) is tuple else type(tile)(*parts)


def _read_16bit_rgb(path: Path, im: Image.Image, rawmode: str, value: int) -> np.ndarray:
    """A 16-bit RGB(A) image that Pillow decodes to its top bytes, as uint16: decoded again with
    the other byte order's raw mode, the same stream gives the low bytes (PNG and TIFF predictors
    work on whole pixels of 6 or 8 bytes either way)."""
    other_order = {"B": "L", "L": "B", "N": "B" if sys.byteorder == "little" else "L"}
    swapped = rawmode[:-1] + other_order[rawmode[-1]]
    method = TRANSPOSE.get(value)
    high = np.asarray(im.transpose(method) if method is not None else im.copy())
    with open_image(path) as again:
        again.tile = [_with_rawmode(t, swapped) for t in again.tile]
        low = np.asarray(again.transpose(method) if method is not None else again.copy())
    if high.shape != low.shape:
        raise InputError(f"{path}: the 16-bit samples of this {im.format} file could not be decoded whole; "
                         "save it as a 16-bit TIFF or PNG without alpha")
    return (high.astype(np.uint16) << 8) | low


def decode(path: Path, eight_bit: Callable[[Image.Image], np.ndarray] = np.asarray,
           check: Callable[[Image.Image], None] | None = None, what: str = "image") -> tuple[np.ndarray, bool]:
    """The pixels of an image file at its displayed orientation: (eight_bit(the image), True) for
    an 8-bit image, or (its values, False) where they have more than 8 bits or come from
    tifffile (uint16, int32, float32, ...; H x W or H x W x samples). `check(image)` runs on the
    opened file first (masks refuse lossy formats there); `what` names the file in errors."""
    try:
        with open_image(path) as im:
            if check is not None:
                check(im)
            value = orientation(im, path)
            rawmode = _sixteen_bit_samples(im)
            if rawmode is not None:
                if im.mode in ("RGB", "RGBA") and rawmode.startswith(("RGB;", "RGBA;", "RGBX;")):
                    return _read_16bit_rgb(path, im, rawmode, value), False
                if im.format == "TIFF":
                    return _read_tiff(path), False
                raise InputError(f"{path}: {im.format} with 16 bits per sample in a layout Pillow reads only as "
                                 f"8 bits ({rawmode}, e.g. 16-bit grayscale with alpha), so it cannot be read "
                                 "faithfully; save it as 16-bit grayscale or RGB (PNG or TIFF) without alpha")
            if value != 1:
                im = im.transpose(TRANSPOSE[value])
            if im.mode in WIDE_MODES:
                values = np.asarray(im)
                return values.astype(values.dtype.newbyteorder("=")), False
            return eight_bit(im), True
    except UnidentifiedImageError as e:
        if path.suffix.lower() in TIFF_SUFFIXES:
            return _read_tiff(path, e), False
        raise _unreadable(path, e, what) from e
    except (OSError, ValueError, SyntaxError) as e:
        raise _unreadable(path, e, what) from e


# ---------------------------------------------------------------- TIFFs Pillow cannot open

def _tiff_page(tif, path: Path):
    page = tif.pages[0]
    axes = page.axes.replace("S", "")
    if axes != "YX":
        raise InputError(f"{path}: TIFF with axes {page.axes} (one image of Y, X and samples was expected); "
                         "save one 2-D image per file")
    return page


def _tiff_header(path: Path, reason: Exception | None = None) -> tuple[int, int, int, int]:
    """(height, width, samples, orientation) of a TIFF that Pillow cannot open, from tifffile."""
    tifffile = _tifffile(path, reason)
    try:
        with tifffile.TiffFile(path) as tif:
            page = _tiff_page(tif, path)
            h, w = page.imagelength, page.imagewidth
            value = int(page.tags[274].value) if 274 in page.tags else 1
            value = value if value in TRANSPOSE else 1
            return (w, h, page.samplesperpixel, value) if value in SWAPS_SIDES else (h, w, page.samplesperpixel, value)
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - tifffile raises many kinds for damaged or unsupported files
        raise _unreadable(path, e) from e


def _tifffile(path: Path, reason: Exception | None):
    try:
        import tifffile
    except ImportError:
        raise InputError(f"{path}: Pillow cannot read this TIFF ({reason}) and tifffile, which reads float RGB and "
                         "other TIFFs, is not installed (pip install tifffile)") from None
    return tifffile


def _read_tiff(path: Path, reason: Exception | None = None) -> np.ndarray:
    """A TIFF's first image with tifffile, as H x W or H x W x samples at its displayed orientation."""
    tifffile = _tifffile(path, reason)
    try:
        with tifffile.TiffFile(path) as tif:
            page = _tiff_page(tif, path)
            _check_pixels(path, page.imagewidth, page.imagelength)
            photometric = int(page.photometric)
            samples = page.samplesperpixel
            if not ((photometric == 1 and samples in (1, 2)) or (photometric == 2 and samples in (3, 4))):
                raise InputError(f"{path}: TIFF with photometric interpretation {page.photometric.name} and {samples} "
                                 "samples per pixel; grayscale (1 sample, or 2 with alpha) and RGB (3, or 4 with "
                                 "alpha) are read: save it as one of those")
            values = page.asarray()
            if page.axes.startswith("S"):
                values = np.moveaxis(values, 0, -1)
            value = int(page.tags[274].value) if 274 in page.tags else 1
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - tifffile raises many kinds for damaged or unsupported files
        raise _unreadable(path, e) from e
    values = _orient_array(values, value if value in TRANSPOSE else 1)
    return np.ascontiguousarray(values.astype(values.dtype.newbyteorder("=")))


# ---------------------------------------------------------------- to 8 bits

def _range(values: np.ndarray, intensity: Intensity, path: Path) -> tuple[float, float]:
    kind = values.dtype.kind
    if intensity.rule == "range":
        return intensity.low, intensity.high
    if kind == "f":
        return 0.0, 1.0
    if intensity.rule == "dtype" or values.dtype.itemsize <= 2:
        info = np.iinfo(values.dtype)
        return float(info.min), float(info.max)
    return 0.0, 65535.0   # auto: 32-bit integer images hold 16-bit data (checked by the caller)


def to_uint8(values: np.ndarray, intensity: Intensity, path: Path) -> np.ndarray:
    """Values of more than 8 bits (or float) scaled to uint8 by the rule (module docstring);
    uint8 values unchanged."""
    if values.dtype == np.uint8:
        return values
    if values.dtype == bool:
        return values.astype(np.uint8) * 255
    if values.dtype.kind not in "uif":
        raise InputError(f"{path}: pixel values of type {values.dtype}; integer and float images are read")
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise InputError(f"{path}: float image with NaN or infinite values; replace them (e.g. by 0) in the file")
    low, high = _range(values, intensity, path)
    lo, hi = (values.min(), values.max()) if values.size else (0, 0)
    if intensity.rule != "range" and (lo < low or hi > high):
        what = "float" if values.dtype.kind == "f" else f"{values.dtype.itemsize * 8}-bit integer"
        raise InputError(f"{path}: {what} image with values {lo:g} .. {hi:g}, outside {low:g} .. {high:g}, the range "
                         f"that intensity_range {intensity.describe()} scales to 0..255; set {intensity.key} to the "
                         f"data's range, e.g. {intensity.suggest(int(np.floor(lo)), int(np.ceil(hi)))}")
    if intensity.rule != "range" and values.dtype.kind in "iu" and high == 65535 and hi < TWELVE_BIT:
        _note_low_bits(path, intensity)
    work = np.float64 if values.dtype.itemsize > 4 or values.dtype.kind in "iu" and values.dtype.itemsize > 2 \
        else np.float32
    scaled = (np.clip(values, low, high).astype(work) - work(low)) * work(255.0 / (high - low))
    return np.rint(scaled).clip(0, 255).astype(np.uint8)


def to_channels(values: np.ndarray, channels: int) -> np.ndarray:
    """uint8 H x W or H x W x samples (1 gray, 2 gray + alpha, 3 RGB, 4 RGBA) -> H x W x channels."""
    if values.ndim == 3 and values.shape[-1] in (1, 2):
        values = values[..., 0]
    elif values.ndim == 3:
        values = values[..., :3]
    if values.ndim == 2:
        return np.repeat(values[..., None], 3, -1) if channels == 3 else values[..., None]
    return values if channels == 3 else np.asarray(Image.fromarray(np.ascontiguousarray(values)).convert("L"))[..., None]


def read_image(path: Path, channels: int = 3, intensity: Intensity | None = None) -> np.ndarray:
    """H x W x channels uint8 (RGB, or one grayscale channel) at the displayed orientation, by the
    bit-depth rule `intensity` (default auto; module docstring)."""
    def eight_bit(im: Image.Image) -> np.ndarray:
        return np.asarray(im.convert("RGB")) if channels == 3 else np.asarray(im.convert("L"))[..., None]

    values, converted = decode(path, eight_bit)
    if converted:
        return values
    if values.ndim == 3 and values.shape[-1] not in (1, 2, 3, 4):
        raise InputError(f"{path}: image with {values.shape[-1]} samples per pixel; grayscale and RGB are read")
    return to_channels(to_uint8(values, intensity or AUTO, path), channels)


# ---------------------------------------------------------------- masks and sizes

def nearest_palette_index(rgb: np.ndarray, palette: list[tuple[int, int, int]]) -> np.ndarray:
    """Map each RGB pixel to the index of the nearest palette colour (squared distance)."""
    pal = np.asarray(palette, dtype=np.int32)
    diff = rgb.reshape(-1, 1, 3).astype(np.int32) - pal[None]
    return (diff**2).sum(-1).argmin(1).reshape(rgb.shape[:2]).astype(np.uint8)


def resize_pair(image: np.ndarray, mask: np.ndarray | None, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
    """Image (H x W x C) bilinear and mask (H x W, or labels x H x W) nearest to `size`."""
    h, w = size
    if image.shape[:2] != (h, w):
        planes = [image[..., c] for c in range(image.shape[-1])]
        image = np.stack([np.asarray(Image.fromarray(p).resize((w, h), Image.BILINEAR)) for p in planes], -1)
        if mask is not None:
            layers = mask if mask.ndim == 3 else mask[None]
            resized = np.stack([np.asarray(Image.fromarray(m.astype(np.uint8)).resize((w, h), Image.NEAREST))
                                for m in layers])
            mask = resized if mask.ndim == 3 else resized[0]
    return image, mask
