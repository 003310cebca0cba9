"""Photos as people take them: upright by their EXIF orientation, colours in sRGB, written as PNG, JPEG or WebP.

`read_photo` decodes a file or uploaded bytes the way a viewer shows it: rotated or mirrored as its EXIF
orientation says, converted from its embedded ICC colour profile (Display P3, Adobe RGB, …) to sRGB,
which is what the models were trained on and what a browser assumes of an untagged image. The EXIF block
comes back too (orientation reset, since the pixels are upright now) for `--keep-metadata`.
"""

from __future__ import annotations

import io
import logging
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageOps
from pillow_heif import register_heif_opener

from pipeline.errors import InputDataError, ParamsError, shown_value
from pipeline.io import atomic_path, to_rgb_uint8

# HEIC is what iPhones save photos as: Pillow reads it through libheif's plugin (AVIF it reads itself). The plugin
# turns the pixels upright as the file's transform boxes say and sets the EXIF orientation to 1, so the
# exif_transpose below does not turn them twice.
register_heif_opener()

# Output formats by the name users type (and the file suffix): PIL format, MIME type.
OUTPUT_FORMATS = {"png": ("PNG", "image/png"), "jpg": ("JPEG", "image/jpeg"), "webp": ("WEBP", "image/webp")}
# Formats a photo may arrive in; anything else PIL could open (PDF, EPS, ICO, …) is refused.
INPUT_FORMATS = {"JPEG", "PNG", "WEBP", "HEIF", "AVIF", "TIFF", "BMP", "GIF", "MPO"}  # MPO: some phones' JPEGs
INPUT_FORMATS_TEXT = "JPEG, PNG, WebP, HEIC, AVIF, TIFF, BMP or GIF"  # as messages name them
DEFAULT_QUALITY = 90
EXIF_ORIENTATION = 0x0112
TIFF_BITS_PER_SAMPLE = 258  # the TIFF tag of each sample's bit depth
_SRGB = ImageCms.createProfile("sRGB")
log = logging.getLogger(__name__)


class ImageTooLargeError(InputDataError):
    """An image over the pixel limit (infer.max_pixels) or PIL's decompression-bomb limit."""


class UnsupportedImageError(InputDataError):
    """A file that is not a photo in a format accepted here."""


class OutputTooLargeError(InputDataError):
    """An image wider or taller than the chosen output format stores."""


# The longest side each output format stores (libjpeg's JPEG_MAX_DIMENSION, WebP's 14-bit sides; PNG's 2³¹ − 1)
MAX_OUTPUT_SIDE = {"png": 2**31 - 1, "jpg": 65500, "webp": 16383}
MAX_JPEG_EXIF = 65533  # bytes: a JPEG carries EXIF in one APP1 segment of at most 64 KiB (Pillow refuses more)


def check_output_size(fmt: str, width: int, height: int, name: str) -> None:
    """Refuse an image the output format cannot store, before any work is spent restoring it."""
    limit = MAX_OUTPUT_SIDE[fmt]
    if max(width, height) > limit:
        raise OutputTooLargeError(f"{name} is {width}x{height}: {fmt} stores at most {limit:,} pixels a side; "
                                  "choose png")


@dataclass
class Photo:
    """An upright sRGB HxWx3 uint8 image, and the EXIF block to keep when asked (orientation set to 1)."""

    rgb: np.ndarray
    exif: bytes | None = None
    converted_from: str | None = None  # the description of the ICC profile converted from, if any


# Where a user sets the pixel limit of predict, serve and evaluate (the registered model names its own)
MAX_PIXELS_SETTING = "infer.max_pixels, or --max-pixels"


def read_photo(source: Path | bytes, max_pixels: int | None = None, name: str | None = None,
               limit_setting: str = MAX_PIXELS_SETTING) -> Photo:
    """Decode a file or encoded bytes as an upright sRGB photo; InputDataError names what is wrong.

    With `max_pixels`, an image whose header declares more pixels is refused before it is decoded; the refusal
    names `limit_setting`, where the limit is set.
    """
    name = name or (str(source) if isinstance(source, Path) else "upload")
    try:
        with warnings.catch_warnings():  # PIL only warns below twice its bomb limit; the warning lets it decode
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source if isinstance(source, Path) else io.BytesIO(source)) as im:
                if im.format not in INPUT_FORMATS:
                    raise UnsupportedImageError(f"{name} is in {im.format} format; send a photo in "
                                                f"{INPUT_FORMATS_TEXT}")
                width, height = im.size
                if max_pixels is not None and width * height > max_pixels:
                    raise ImageTooLargeError(f"image from {name} is {width}x{height} = {width * height:,} pixels, "
                                         f"over the limit of {max_pixels:,} ({limit_setting})")
                frames = getattr(im, "n_frames", 1)
                if frames > 1:
                    log.warning("%s has %d frames; using the first", name, frames)
                im.load()
                _check_bit_depth(im, name)
                exif = im.getexif()
                upright = ImageOps.exif_transpose(im)
                icc = im.info.get("icc_profile")
                rgb, converted = _to_srgb(upright, icc, name)
                if not icc:
                    _warn_unconverted_primaries(im.info.get("nclx_profile"), name)
    except FileNotFoundError as exc:
        raise InputDataError(f"image not found: {name}") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        declared = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(declared[1]):,} pixels" if declared else "too many pixels"
        raise ImageTooLargeError(f"image from {name} is {size}, over the decompression-bomb limit of "
                             f"{Image.MAX_IMAGE_PIXELS:,}") from None
    except Image.UnidentifiedImageError:
        # PIL cannot tell a file of another kind from one whose header it no longer recognises
        raise UnsupportedImageError(f"cannot read image from {name}: not a {INPUT_FORMATS_TEXT} file, "
                                    "or one too damaged to recognise") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise InputDataError(f"cannot read image from {name}: {exc}") from exc
    if len(exif):
        exif[EXIF_ORIENTATION] = 1
    return Photo(rgb, exif.tobytes() if len(exif) else None, converted)


# HEIF's colour primaries codes (ITU-T H.273) that are sRGB's own (1: BT.709) or unstated (2); names of others
SRGB_PRIMARIES = {1, 2}
PRIMARIES_NAMES = {9: "BT.2020", 11: "DCI-P3", 12: "Display P3"}


def _warn_unconverted_primaries(nclx: dict | None, name: str) -> None:
    """Say that a HEIC whose colours are declared only by code (nclx, as Android phones write them), in primaries
    other than sRGB's, is read as sRGB: littlecms converts from ICC profiles only, so its colours come out a little
    less saturated than a viewer shows them."""
    primaries = (nclx or {}).get("color_primaries")
    if primaries is not None and primaries not in SRGB_PRIMARIES:
        log.warning("%s declares its colours in %s primaries by code, with no ICC profile: read as sRGB, not "
                    "converted", name, PRIMARIES_NAMES.get(primaries, f"H.273 code {primaries}"))


def _check_bit_depth(im: Image.Image, name: str) -> None:
    """Refuse a TIFF of 32-bit integer samples: read as 16-bit (as PIL gives them), 8-bit values came out black."""
    bits = getattr(im, "tag_v2", {}).get(TIFF_BITS_PER_SAMPLE, (8,)) if im.format == "TIFF" else (8,)
    if im.mode == "I" and max(bits) > 16:
        raise UnsupportedImageError(f"{name} has {max(bits)}-bit integer pixels; only 8- and 16-bit images are read "
                                    "(save it as 8- or 16-bit)")


def _to_srgb(im: Image.Image, icc: bytes | None, name: str = "image") -> tuple[np.ndarray, str | None]:
    """The image as sRGB uint8; an embedded ICC profile other than sRGB is converted from (perceptual intent)."""
    rgb = to_rgb_uint8(im, name)
    if not icc:
        return rgb, None
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        description = ImageCms.getProfileDescription(profile).strip()
    except (OSError, ImageCms.PyCMSError):
        return rgb, None  # a broken profile: show the pixels as they are, as browsers do
    if "srgb" in description.lower() or im.mode not in ("RGB", "RGBA", "P", "L", "LA"):
        return rgb, None
    try:
        converted = ImageCms.profileToProfile(Image.fromarray(rgb), profile, _SRGB, outputMode="RGB",
                                              renderingIntent=ImageCms.Intent.PERCEPTUAL)
    except ImageCms.PyCMSError:
        return rgb, None
    return np.array(converted), description


def check_output_format(fmt: str, quality: int) -> None:
    """Refuse an output format or quality the writers do not take."""
    if fmt not in OUTPUT_FORMATS:  # values cut: a request's field may be of any length
        raise ParamsError(f"format {shown_value(repr(fmt))}: choose one of {', '.join(OUTPUT_FORMATS)}")
    if not 1 <= quality <= 100:
        raise ParamsError(f"quality {shown_value(str(quality))}: choose 1 to 100 (JPEG and WebP; PNG is lossless)")


def encode_image(rgb: np.ndarray, fmt: str = "png", quality: int = DEFAULT_QUALITY, exif: bytes | None = None) -> bytes:
    """An HxWx3 uint8 image encoded as png, jpg or webp; `exif` is embedded when given."""
    check_output_format(fmt, quality)
    if exif and fmt == "jpg" and len(exif) > MAX_JPEG_EXIF:
        log.warning("metadata of %s bytes dropped: a JPEG holds at most %s (choose png or webp to keep it)",
                    f"{len(exif):,}", f"{MAX_JPEG_EXIF:,}")
        exif = None
    options: dict = {"exif": exif} if exif else {}
    if fmt == "png":
        options |= {"optimize": False, "compress_level": 6}
    else:
        options |= {"quality": quality}
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format=OUTPUT_FORMATS[fmt][0], **options)
    return buffer.getvalue()


def write_image(path: Path, rgb: np.ndarray, fmt: str = "png", quality: int = DEFAULT_QUALITY,
                exif: bytes | None = None, overwrite: bool = True) -> None:
    """Write `encode_image`'s bytes atomically (never over an existing file unless `overwrite`)."""
    data = encode_image(rgb, fmt, quality, exif)
    with atomic_path(path, overwrite) as tmp:
        tmp.write_bytes(data)
