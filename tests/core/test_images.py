"""Decoding limits, EXIF orientation, GPS stripping, capture metadata."""

from __future__ import annotations

import io
import struct
import zlib
from datetime import datetime

import numpy as np
import pytest
from PIL import Image

from labelfree.core.images import (
    ImageDecodeError, decode_image, iter_image_files, load_rgb, read_capture_metadata, sanitize_image, strip_gps,
)


def _exif(orientation=None, gps=True, make="Reconyx", model="HyperFire 2", when="2024:07:15 05:42:10"):
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = make, model
    if orientation:
        exif[0x0112] = orientation
    exif.get_ifd(0x8769)[0x9003] = when
    if gps:
        exif.get_ifd(0x8825).update({1: "S", 2: (2.0, 19.0, 55.5), 3: "E", 4: (34.0, 50.0, 1.25)})
    return exif


def _marked(width=60, height=40) -> np.ndarray:
    """Dark image with a bright block in the top-left corner: orientation is visible."""
    arr = np.full((height, width, 3), 20, np.uint8)
    arr[: height // 3, : width // 3] = 240
    return arr


def _encode(arr, fmt="JPEG", **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt, **kw)
    return buf.getvalue()


def _gps_of(data: bytes) -> dict:
    return dict(Image.open(io.BytesIO(data)).getexif().get_ifd(0x8825))


def test_gps_is_stripped_from_jpeg_without_reencoding_pixels():
    data = _encode(_marked(), exif=_exif())
    assert _gps_of(data)
    clean = sanitize_image(data)
    assert clean.had_gps and clean.rewritten and not _gps_of(clean.data)
    assert 0x8825 not in Image.open(io.BytesIO(clean.data)).getexif()
    # the entropy-coded scan is copied byte for byte: lossless
    assert data[data.index(b"\xff\xda"):] == clean.data[clean.data.index(b"\xff\xda"):]
    meta = read_capture_metadata(clean.data)  # date and camera survive in the stored bytes
    assert meta.captured_at == datetime(2024, 7, 15, 5, 42, 10)
    assert (meta.camera_make, meta.camera_model) == ("Reconyx", "HyperFire 2")


def test_rotated_photo_is_stored_upright_without_gps_or_orientation_tag():
    arr = _marked()
    data = _encode(arr, exif=_exif(orientation=6))  # "rotate 90 CW to view"
    clean = sanitize_image(data)
    stored = Image.open(io.BytesIO(clean.data))
    assert stored.size == (40, 60) and (clean.width, clean.height) == (40, 60)
    assert 0x0112 not in stored.getexif() and not _gps_of(clean.data)
    pixels = np.asarray(stored.convert("RGB"))
    assert pixels[5, -5].mean() > 200 and pixels[-5, 5].mean() < 60  # block moved to top-right
    assert np.array_equal(np.asarray(decode_image(clean.data)) > 128, np.asarray(decode_image(data)) > 128)
    assert read_capture_metadata(clean.data).camera_model == "HyperFire 2"


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_gps_is_stripped_from_other_formats(fmt):
    data = _encode(_marked(), fmt, exif=_exif())
    assert _gps_of(data)
    clean = sanitize_image(data)
    assert clean.had_gps and not _gps_of(clean.data) and clean.suffix == ".png"
    assert read_capture_metadata(clean.data).captured_at == datetime(2024, 7, 15, 5, 42, 10)


def test_gps_in_xmp_is_stripped():
    xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF><rdf:Description '
           b'exif:GPSLatitude="2,19.925S" exif:GPSLongitude="34,50.02E"/></rdf:RDF></x:xmpmeta>')
    data = _encode(_marked(), xmp=xmp)
    assert b"GPSLatitude" in data
    clean = strip_gps(data)
    assert b"GPSLatitude" not in clean and b"GPS" not in clean


def test_photo_without_gps_is_stored_unchanged():
    data = _encode(_marked(), exif=_exif(gps=False))
    clean = sanitize_image(data)
    assert clean.data is data and not clean.had_gps and not clean.rewritten
    assert clean.metadata.camera_make == "Reconyx"


def test_capture_metadata_ignores_placeholder_dates():
    data = _encode(_marked(), exif=_exif(gps=False, when="0000:00:00 00:00:00", make="  Bushnell\x00"))
    meta = read_capture_metadata(data)
    assert meta.captured_at is None and meta.camera_make == "Bushnell"


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def test_decompression_bomb_is_refused_before_decoding():
    bomb = _png_header_only(40_000, 40_000)  # 1.6 gigapixels in 100 bytes
    with pytest.raises(ImageDecodeError) as info:
        sanitize_image(bomb)
    assert info.value.code == "payload_too_large" and "over the limit" in info.value.detail


@pytest.mark.parametrize("data, message", [
    (b"", "empty"),
    (b"%PDF-1.4 not an image", "not a decodable image"),
])
def test_non_images_are_refused(data, message):
    with pytest.raises(ImageDecodeError, match=message):
        decode_image(data)


def test_truncated_jpeg_is_refused():
    data = _encode(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    with pytest.raises(ImageDecodeError, match="not a decodable image"):
        sanitize_image(data[: len(data) // 2])


def test_min_side_and_pixel_limit():
    data = _encode(_marked(60, 40))
    with pytest.raises(ImageDecodeError, match="minimum side 41"):
        decode_image(data, min_side=41)
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data, max_pixels=60 * 40 - 1)
    assert info.value.code == "payload_too_large"


def test_load_rgb_and_iter_image_files(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.jpg").write_bytes(_encode(_marked()))
    (tmp_path / "a" / "notes.txt").write_text("no")
    (tmp_path / ".hidden.jpg").write_bytes(b"")
    files = list(iter_image_files([tmp_path]))
    assert [p.name for p in files] == ["x.jpg"]
    arr = load_rgb(files[0])
    assert arr.shape == (40, 60, 3) and arr.dtype == np.uint8


def test_gps_hidden_after_the_scan_forces_a_reencode():
    data = _encode(_marked(), exif=_exif())
    trailer = _encode(_marked(8, 8), exif=_exif())  # e.g. an MPO's second picture with its own GPS
    clean = sanitize_image(data + trailer)
    assert clean.had_gps and clean.data.count(b"Exif\x00\x00") <= 1
    assert not _gps_of(clean.data) and b"\x88\x25" not in clean.data.split(b"\xff\xda")[0]


def test_preview_decode_keeps_validation_and_true_size():
    arr = np.random.default_rng(1).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    data = _encode(arr, exif=_exif())
    clean = sanitize_image(data, preview_side=96)
    assert (clean.width, clean.height) == (640, 480) and min(clean.image.size) >= 96
    assert clean.image.size[0] < 640 and not _gps_of(clean.data)
    with pytest.raises(ImageDecodeError, match="not a decodable image"):
        sanitize_image(data[: len(data) * 2 // 3], preview_side=96)
    rotated = sanitize_image(_encode(arr, exif=_exif(orientation=6)), preview_side=96)
    assert (rotated.width, rotated.height) == (480, 640) == rotated.image.size  # re-encoded: full pixels


def _camera_trap_jpeg(width: int, height: int) -> bytes:
    """A smooth scene with a few sharp blobs, as a camera trap's large JPEG."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    rgb = np.stack([xx / width * 200, yy / height * 180, (xx + yy) / (width + height) * 220], axis=-1)
    for cx, cy, r in ((0.3, 0.6, 0.08), (0.7, 0.4, 0.12)):
        rgb[(xx - cx * width) ** 2 + (yy - cy * height) ** 2 < (r * width) ** 2] = (240, 200, 60)
    buf = io.BytesIO()
    Image.fromarray(rgb.astype(np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def test_detector_decode_of_a_large_jpeg_is_reduced_and_matches_the_full_decode():
    from labelfree.core.images import decode_image, detector_preview_side, detector_resize

    data = _camera_trap_jpeg(2400, 1800)
    side = detector_preview_side(128)
    reduced = decode_image(data, preview_side=side)
    assert side <= min(reduced.size) < 1800 and reduced.size[0] * 3 == reduced.size[1] * 4
    full = np.asarray(detector_resize(decode_image(data), 128), dtype=np.float32)
    fast = np.asarray(detector_resize(reduced, 128), dtype=np.float32)
    assert np.abs(full - fast).mean() < 1.5  # grey levels: what the detector sees is the same picture


def test_detector_decode_of_a_training_size_photo_is_the_full_decode():
    from labelfree.core.images import decode_image, detector_preview_side

    data = _camera_trap_jpeg(460, 460)
    reduced = decode_image(data, preview_side=detector_preview_side(128))
    assert np.array_equal(np.asarray(reduced), np.asarray(decode_image(data)))


def test_a_bad_image_detail_names_the_problem_without_object_reprs():
    with pytest.raises(ImageDecodeError) as err:
        decode_image(b"not an image at all")
    assert err.value.detail.startswith("not a decodable image: cannot identify image file")
    assert "0x" not in err.value.detail and "<" not in err.value.detail
