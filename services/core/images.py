"""Image decoding with limits, EXIF orientation, GPS stripping and capture metadata.

Decoded images are RGB ``uint8`` arrays shaped ``(H, W, 3)``.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from labelfree.core.errors import LabelfreeError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
DEFAULT_MAX_PIXELS = 64_000_000


class ImageDecodeError(LabelfreeError):
    """The bytes are not a usable image (corrupt, truncated, too large, too small)."""

    def __init__(self, detail: str, code: str = "invalid"):
        super().__init__(code, detail)



def _reason(exc: BaseException) -> str:
    """The decoder's message without object reprs ("<_io.BytesIO object at 0x...>"): the same bad
    bytes give the same 4xx detail every time, and reports stay stable between runs."""
    return re.sub(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>", "", str(exc))


def _open_checked(data: bytes, max_pixels: int) -> Image.Image:
    """Open (not decode) ``data``; refuse empty bodies and images over ``max_pixels``."""
    if not data:
        raise ImageDecodeError("empty image body")
    try:
        probe = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:  # Pillow's own guard, far above ours
        raise ImageDecodeError(f"image is over the limit of {max_pixels} pixels: {exc}",
                               code="payload_too_large") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageDecodeError(f"not a decodable image: {_reason(exc)}") from exc
    width, height = probe.size
    if width * height > max_pixels:
        probe.close()
        raise ImageDecodeError(
            f"image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels}",
            code="payload_too_large",
        )
    return probe


def _decode_rgb(probe: Image.Image, min_side: int, preview_side: int | None = None) -> Image.Image:
    """Decode an opened image, apply EXIF orientation, convert to RGB.

    Every byte of the stream is decoded, so truncated files fail. With ``preview_side`` a JPEG
    is decoded at a reduced DCT scale (short side still >= ``preview_side``): same validation,
    a fraction of the cost, for callers that only hash the pixels.
    """
    width, height = probe.size
    if min(width, height) < min_side:  # orientation never changes the short side
        raise ImageDecodeError(f"image is {width}x{height}, below the minimum side {min_side}")
    try:
        if preview_side and probe.format == "JPEG" and min(width, height) > 2 * preview_side:
            scale = preview_side / min(width, height)
            probe.draft("RGB", (max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale))))
        probe.load()  # forces a full decode: truncated files fail here
        image = ImageOps.exif_transpose(probe)
        image = image.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageDecodeError(f"not a decodable image: {_reason(exc)}") from exc
    return image


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int = 1,
                 preview_side: int | None = None) -> Image.Image:
    """Decode bytes into an RGB PIL image, EXIF orientation applied.

    ``preview_side``: a JPEG whose short side is over twice this is decoded at a reduced DCT
    scale whose short side stays >= ``preview_side`` (see ``detector_preview_side``); the image
    is then smaller than the file says. Raises ImageDecodeError for empty, corrupt or truncated
    data, for images over ``max_pixels`` pixels (decompression bombs) and for sides below ``min_side``.
    """
    with _open_checked(data, max_pixels) as probe:
        return _decode_rgb(probe, min_side, preview_side)


def load_rgb(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS, preview_side: int | None = None) -> np.ndarray:
    """Read a file into an (H, W, 3) uint8 RGB array (``preview_side`` as in ``decode_image``)."""
    return np.asarray(decode_image(Path(path).read_bytes(), max_pixels=max_pixels, preview_side=preview_side))


def iter_image_files(roots: Iterable[str | Path]) -> Iterator[Path]:
    """Image files under each root (recursive, sorted, by suffix). A file root is yielded as is."""
    for root in roots:
        root = Path(root)
        if root.is_file():
            yield root
            continue
        if not root.is_dir():
            raise LabelfreeError("bad_request", f"{root} is not a directory")
        for path in sorted(root.rglob("*")):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("."):
                yield path


# --- Privacy: GPS stripping, and the capture metadata we keep as columns -----------------

_TAG_ORIENTATION = 0x0112
_TAG_MAKE = 0x010F
_TAG_MODEL = 0x0110
_TAG_DATETIME = 0x0132
_IFD_EXIF = 0x8769
_IFD_GPS = 0x8825
_IFD_INTEROP = 0xA005
_TAG_DATETIME_ORIGINAL = 0x9003
_TAG_DATETIME_DIGITIZED = 0x9004
_TAG_MAKERNOTE = 0x927C  # vendor blob; some vendors repeat the position inside it
# Formats stored as they came when they carry no GPS; anything else that needs rewriting becomes PNG.
_SUFFIX_FOR_FORMAT = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "WEBP": ".webp", "BMP": ".bmp",
                      "TIFF": ".tif", "MPO": ".jpg"}
_MIME_FOR_SUFFIX = {".jpg": "image/jpeg", ".png": "image/png", ".gif": "image/gif", ".webp": "image/webp",
                    ".bmp": "image/bmp", ".tif": "image/tiff"}


@dataclass(frozen=True)
class CaptureMetadata:
    """What a photo's EXIF says about its capture; ``captured_at`` is naive camera-local time."""

    captured_at: datetime | None = None
    camera_make: str | None = None
    camera_model: str | None = None


@dataclass
class SanitizedImage:
    """A validated image ready to store.

    ``data`` are the bytes to store: GPS-free, pixels upright (EXIF orientation applied), with
    capture date and camera kept in EXIF; ``width`` x ``height`` are theirs. ``image`` is the decoded
    RGB picture, upright: full size, or a reduced-scale preview when ``sanitize_image`` was asked
    for one (for hashing). ``had_gps``: the input carried a location; ``rewritten``: ``data`` differs
    from the input.
    """

    data: bytes
    suffix: str
    content_type: str
    image: Image.Image
    width: int
    height: int
    metadata: CaptureMetadata
    had_gps: bool
    rewritten: bool


def _clean_text(value: object, limit: int = 200) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    value = value.replace("\x00", "").strip()
    return value[:limit] or None


def _parse_exif_datetime(value: object) -> datetime | None:
    text = _clean_text(value, 64)
    if not text or text.startswith("0000"):
        return None
    for fmt in ("%Y:%m:%d %H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y:%m:%d %H:%M", "%Y-%m-%dT%H:%M:%S"):
        try:
            return datetime.strptime(text[:19], fmt)
        except ValueError:
            continue
    return None


def capture_metadata(exif: Image.Exif) -> CaptureMetadata:
    """DateTimeOriginal (falling back to DateTimeDigitized, then DateTime), camera make and model."""
    sub = exif.get_ifd(_IFD_EXIF)
    captured = None
    for value in (sub.get(_TAG_DATETIME_ORIGINAL), sub.get(_TAG_DATETIME_DIGITIZED), exif.get(_TAG_DATETIME)):
        captured = _parse_exif_datetime(value)
        if captured is not None:
            break
    return CaptureMetadata(captured, _clean_text(exif.get(_TAG_MAKE)), _clean_text(exif.get(_TAG_MODEL)))


def read_capture_metadata(data: bytes) -> CaptureMetadata:
    """Capture metadata from image bytes (no full decode)."""
    with _open_checked(data, DEFAULT_MAX_PIXELS) as probe:
        return capture_metadata(probe.getexif())


def _xmp_of(probe: Image.Image) -> bytes:
    xmp = probe.info.get("xmp") or probe.info.get("XML:com.adobe.xmp") or b""
    return xmp.encode("utf-8", "replace") if isinstance(xmp, str) else bytes(xmp)


def _has_gps(probe: Image.Image, exif: Image.Exif) -> bool:
    if _IFD_GPS in exif or exif.get_ifd(_IFD_GPS):
        return True
    # XMP can repeat the position (exif:GPSLatitude); treat any GPS mention there as location.
    if b"GPS" in _xmp_of(probe):
        return True
    return any(m == "APP1" and b"GPS" in p and not p.startswith(b"Exif") for m, p in getattr(probe, "applist", []))


def gps_free_exif(exif: Image.Exif, *, keep_orientation: bool) -> Image.Exif:
    """A copy of ``exif`` without the GPS IFD, interop IFD and maker note (orientation optional)."""
    clean = Image.Exif()
    for tag, value in exif.items():
        if tag in (_IFD_GPS, _IFD_EXIF, _IFD_INTEROP) or (tag == _TAG_ORIENTATION and not keep_orientation):
            continue
        clean[tag] = value
    sub = {k: v for k, v in exif.get_ifd(_IFD_EXIF).items() if k not in (_TAG_MAKERNOTE, _IFD_INTEROP)}
    if sub:
        clean.get_ifd(_IFD_EXIF).update(sub)
    return clean


def _jpeg_swap_metadata(data: bytes, exif_payload: bytes | None) -> bytes:
    """Rewrite a JPEG's header segments without re-encoding its pixels.

    The EXIF APP1 segment is replaced by ``exif_payload`` (``b"Exif\\0\\0..."``, or dropped when
    None) and any other APP1 (XMP) that mentions GPS is dropped. Entropy-coded data is copied as is.
    """
    if data[:2] != b"\xff\xd8":
        raise ImageDecodeError("not a JPEG stream")
    out = [data[:2]]
    i, n, wrote_exif = 2, len(data), False
    while i + 4 <= n:
        if data[i] != 0xFF:
            raise ImageDecodeError(f"corrupt JPEG header at byte {i}")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01,) or 0xD0 <= marker <= 0xD7:
            out.append(data[i:i + 2])
            i += 2
            continue
        if marker in (0xDA, 0xD9):  # start of scan: the rest is pixels
            break
        length = int.from_bytes(data[i + 2:i + 4], "big")
        segment = data[i:i + 2 + length]
        payload = segment[4:]
        if marker == 0xE1 and payload.startswith(b"Exif\x00\x00"):
            if exif_payload is not None and not wrote_exif:
                out.append(b"\xff\xe1" + (len(exif_payload) + 2).to_bytes(2, "big") + exif_payload)
                wrote_exif = True
        elif not (marker == 0xE1 and b"GPS" in payload):
            out.append(segment)
        i += 2 + length
    out.append(data[i:])
    return b"".join(out)


def _lossless_strip(data: bytes, exif: Image.Exif) -> bytes | None:
    """The JPEG with a GPS-free EXIF segment, or None when that cannot be done safely
    (a second EXIF block after the scan, as in multi-picture or trailer-carrying files)."""
    clean = gps_free_exif(exif, keep_orientation=True)
    payload = clean.tobytes() if len(clean) else None
    out = _jpeg_swap_metadata(data, payload)
    if out.count(b"Exif\x00\x00") > (1 if payload else 0):
        return None
    return out


def sanitize_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int = 1,
                   preview_side: int | None = None) -> SanitizedImage:
    """Validate ``data`` and return bytes safe to store: no GPS, upright pixels, capture metadata kept.

    - No GPS and upright: the original bytes, untouched.
    - JPEG with GPS, upright: header segments rewritten losslessly (pixels not re-encoded),
      unless a second EXIF block follows the scan (MPO, trailers): then re-encoded.
    - Rotated by EXIF orientation: pixels transposed and re-encoded (JPEG q95, else PNG),
      orientation tag removed, GPS removed, date and camera kept.
    - Other formats with GPS or XMP: re-encoded as PNG (lossless) without GPS.

    ``preview_side``: when the stored bytes need no new pixels, a JPEG is decoded at reduced
    scale and ``.image`` is that preview (short side >= ``preview_side``), enough for hashing;
    ``.width``/``.height`` are always the stored image's. Raises ImageDecodeError like ``decode_image``.
    """
    with _open_checked(data, max_pixels) as probe:
        fmt = probe.format or ""
        try:
            exif = probe.getexif()
        except Exception:  # a broken EXIF block is dropped rather than failing the photo
            exif = Image.Exif()
        orientation = exif.get(_TAG_ORIENTATION, 1)
        has_gps = _has_gps(probe, exif)
        icc = probe.info.get("icc_profile")
        meta = capture_metadata(exif)
        upright = orientation in (0, 1, None) or not isinstance(orientation, int) or orientation > 8
        out: bytes | None = None
        if upright and not has_gps:
            out = data
        elif upright and fmt == "JPEG":
            out = _lossless_strip(data, exif)  # None: needs re-encoding after all
        full_size = probe.size  # before draft() shrinks it
        rgb = _decode_rgb(probe, min_side, preview_side if out is not None else None)
        width, height = full_size if out is not None else rgb.size
    suffix = _SUFFIX_FOR_FORMAT.get(fmt, ".png")
    if out is None:
        clean = gps_free_exif(exif, keep_orientation=False)
        buf = io.BytesIO()
        extra = {"exif": clean.tobytes()} if len(clean) else {}
        if icc:
            extra["icc_profile"] = icc
        if fmt in ("JPEG", "MPO"):
            rgb.save(buf, "JPEG", quality=95, **extra)
            suffix = ".jpg"
        else:
            rgb.save(buf, "PNG", **extra)
            suffix = ".png"
        out = buf.getvalue()
    return SanitizedImage(out, suffix, _MIME_FOR_SUFFIX[suffix], rgb, width, height, meta, has_gps,
                          out is not data)


def strip_gps(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> bytes:
    """``data`` without GPS location (EXIF GPS IFD and XMP GPS), upright, capture metadata kept."""
    return sanitize_image(data, max_pixels=max_pixels).data


# The detector's input resize, one definition for training, the detect CLI and the inference
# service (train and serve must see the same pixels). Bilinear after an integer box reduction
# (Pillow's ``reducing_gap``): the box filter does most of a large shrink cheaply, bilinear the
# last step under 2x. Measured on 460 px dev photos to 128: 0.38 ms against 0.74 ms for plain
# bilinear (bench/results/detector.md).
DETECTOR_RESAMPLE = Image.Resampling.BILINEAR
DETECTOR_REDUCING_GAP = 1.0


def detector_preview_side(size: int) -> int:
    """The ``preview_side`` a detector of input ``size`` decodes photos at: 2 x ``size``.

    Only a JPEG with a short side over 4 x ``size`` is affected, so a web photo of the size the
    detector was trained on decodes in full, exactly as in training; a 12 MP camera-trap frame
    (3000 px short side, S=128) decodes at 1/8 scale, a fraction of the full decode's cost, and
    still has twice the pixels the stretch to ``size`` keeps (bench/results/inference.md).
    """
    return 2 * int(size)


def detector_resize(image: Image.Image, size: int, box: tuple[float, float, float, float] | None = None) -> Image.Image:
    """``image`` (or its ``box`` region, pixels xyxy) stretched to ``size x size``, the detector's way."""
    return image.resize((size, size), DETECTOR_RESAMPLE, box=box, reducing_gap=DETECTOR_REDUCING_GAP)
