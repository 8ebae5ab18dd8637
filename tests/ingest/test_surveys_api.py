"""Camera-trap uploads through the HTTP API (real Postgres): every bad-input case.

Each rejection is a 4xx naming the file and the reason; the good files of the same
upload are stored (GPS-free) all the same.
"""

from __future__ import annotations

import io
import zipfile

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from labelfree.core.settings import get_settings
from labelfree.core.store import get_store
from tests.core.test_images import _png_header_only
from tests.ingest.conftest import gps_exif, photo

pytestmark = pytest.mark.service


@pytest.fixture(scope="module")
def client():
    from labelfree.ingest.api import app

    with TestClient(app) as c:
        yield c


@pytest.fixture
def survey(client) -> str:
    r = client.post("/v1/surveys", json={"name": "Serengeti grid B", "site": "B07", "camera": "cam-3"})
    assert r.status_code == 201
    return r.json()["id"]


def _zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _by_file(body: dict) -> dict:
    return {r["file"]: r for r in body["rejected"]}


def test_survey_coordinates_are_fuzzed_unless_exact_is_asked(client):
    fuzzed = client.post("/v1/surveys", json={"name": "a", "latitude": -2.33214, "longitude": 34.83342}).json()
    assert (fuzzed["latitude"], fuzzed["longitude"], fuzzed["coords_exact"]) == (-2.3, 34.8, False)
    exact = client.post("/v1/surveys", json={"name": "b", "latitude": -2.33214, "longitude": 34.83342,
                                              "exact_coordinates": True}).json()
    assert (exact["latitude"], exact["longitude"], exact["coords_exact"]) == (-2.33214, 34.83342, True)
    bad = client.post("/v1/surveys", json={"name": "c", "latitude": 95.0, "longitude": 0.0})
    assert bad.status_code == 422 and "out of range" in bad.json()["error"]["detail"]
    half = client.post("/v1/surveys", json={"name": "d", "latitude": 1.0})
    assert half.status_code == 422


def test_multipart_upload_keeps_good_files_and_names_each_bad_one(client, survey):
    good = photo(1, exif=gps_exif())
    files = [
        ("files", ("IMG_0001.JPG", good, "image/jpeg")),
        ("files", ("IMG_0002.JPG", photo(2), "image/jpeg")),
        ("files", ("notes.txt", b"battery low", "text/plain")),
        ("files", ("IMG_0003.JPG", photo(3)[:300], "image/jpeg")),  # truncated
        ("files", ("bomb.png", _png_header_only(40_000, 40_000), "image/png")),
        ("files", ("empty.jpg", b"", "image/jpeg")),
        ("files", ("IMG_0001 copy.JPG", good, "image/jpeg")),  # duplicate
        ("files", ("Löwe_Ñandú_猫.jpg", photo(4), "image/jpeg")),  # unicode name
        ("files", ("../../etc/cron.jpg", photo(5), "image/jpeg")),  # traversal in a part's file name
    ]
    r = client.post(f"/v1/surveys/{survey}/images", files=files)
    assert r.status_code == 207, r.text
    body = r.json()
    assert sorted(a["file"] for a in body["accepted"]) == ["IMG_0001.JPG", "IMG_0002.JPG", "Löwe_Ñandú_猫.jpg"]
    rejected = _by_file(body)
    assert rejected["notes.txt"]["status"] == 415 and "not an image" in rejected["notes.txt"]["reason"]
    assert rejected["IMG_0003.JPG"]["status"] == 422 and "truncated or corrupt" in rejected["IMG_0003.JPG"]["reason"]
    assert rejected["bomb.png"]["status"] == 413 and "over the limit" in rejected["bomb.png"]["reason"]
    assert rejected["empty.jpg"]["status"] == 400 and rejected["empty.jpg"]["reason"] == "empty file"
    assert rejected["IMG_0001 copy.JPG"]["status"] == 409 and "IMG_0001.JPG" in rejected["IMG_0001 copy.JPG"]["reason"]
    assert rejected["../../etc/cron.jpg"]["status"] == 400 and "traversal" in rejected["../../etc/cron.jpg"]["reason"]
    first = next(a for a in body["accepted"] if a["file"] == "IMG_0001.JPG")
    assert first["captured_at"] == "2024-07-15T05:42:10"
    assert (first["camera_make"], first["camera_model"]) == ("Reconyx", "HyperFire 2")
    stored = get_store().get(first["store_key"])
    exif = Image.open(io.BytesIO(stored)).getexif()
    assert 0x8825 not in exif and not exif.get_ifd(0x8825)  # GPS absent from the stored bytes
    listing = client.get(f"/v1/surveys/{survey}").json()
    assert listing["image_count"] == 3 and {i["file"] for i in listing["images"]} >= {"Löwe_Ñandú_猫.jpg"}


def test_all_bad_upload_is_a_4xx_naming_each_file(client, survey):
    r = client.post(f"/v1/surveys/{survey}/images", files=[("f", ("a.txt", b"x", "text/plain")),
                                                           ("f", ("b.csv", b"1,2", "text/csv"))])
    assert r.status_code == 415
    error = r.json()["error"]
    assert "a.txt" in error["detail"] and "b.csv" in error["detail"]
    assert {x["file"] for x in error["rejected"]} == {"a.txt", "b.csv"}


def test_duplicate_of_an_earlier_upload_is_a_409(client, survey):
    data = photo(9)
    assert client.post(f"/v1/surveys/{survey}/images", files=[("f", ("one.jpg", data, "image/jpeg"))]).status_code == 201
    again = client.post(f"/v1/surveys/{survey}/images", files=[("f", ("two.jpg", data, "image/jpeg"))])
    assert again.status_code == 409 and "one.jpg" in again.json()["error"]["detail"]


def test_empty_body_and_wrong_content_type(client, survey):
    r = client.post(f"/v1/surveys/{survey}/images", content=b"", headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert r.status_code == 400 and "empty" in r.json()["error"]["detail"]
    r = client.post(f"/v1/surveys/{survey}/images", json={"files": ["a.jpg"]})
    assert r.status_code == 415 and "multipart/form-data" in r.json()["error"]["detail"]
    r = client.post(f"/v1/surveys/{survey}/archive", content=b"", headers={"Content-Type": "application/zip"})
    assert r.status_code == 400
    r = client.post(f"/v1/surveys/{survey}/archive", content=b"hello", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    r = client.post(f"/v1/surveys/{survey}/archive", content=b"not a zip", headers={"Content-Type": "application/zip"})
    assert r.status_code == 415 and "not a zip" in r.json()["error"]["detail"]


def test_unknown_survey_is_404(client):
    r = client.post("/v1/surveys/00000000-0000-0000-0000-000000000000/images",
                    files=[("f", ("a.jpg", photo(1), "image/jpeg"))])
    assert r.status_code == 404


def test_archive_rejects_traversal_and_absolute_paths_but_keeps_the_rest(client, survey):
    archive = _zip({
        "site B/cam3/IMG_0001.JPG": photo(21, exif=gps_exif(orientation=6)),
        "site B/cam3/Été_夜.jpg": photo(22),
        "../../etc/evil.jpg": photo(23),
        "/abs/evil.jpg": photo(24),
        "C:\\windows\\evil.jpg": photo(25),
        "site B/readme.txt": b"hello",
        "__MACOSX/site B/._IMG_0001.JPG": b"\x00\x05\x16\x07",
        "site B/cam3/dup.jpg": photo(22),
    })
    r = client.post(f"/v1/surveys/{survey}/archive", content=archive, headers={"Content-Type": "application/zip"})
    assert r.status_code == 207, r.text
    body = r.json()
    assert sorted(a["file"] for a in body["accepted"]) == ["site B/cam3/IMG_0001.JPG", "site B/cam3/Été_夜.jpg"]
    rejected = _by_file(body)
    assert "path traversal" in rejected["../../etc/evil.jpg"]["reason"]
    assert "absolute path" in rejected["/abs/evil.jpg"]["reason"]
    assert "absolute path" in rejected["C:/windows/evil.jpg"]["reason"]
    assert rejected["site B/readme.txt"]["status"] == 415
    assert rejected["site B/cam3/dup.jpg"]["status"] == 409
    assert all(400 <= x["status"] < 500 for x in body["rejected"])
    assert body["ignored"] == ["__MACOSX/site B/._IMG_0001.JPG"]
    rotated = next(a for a in body["accepted"] if a["file"].endswith("IMG_0001.JPG"))
    assert (rotated["width"], rotated["height"]) == (96, 96) and rotated["camera_make"] == "Reconyx"
    stored = Image.open(io.BytesIO(get_store().get(rotated["store_key"])))
    assert not stored.getexif().get_ifd(0x8825) and 0x0112 not in stored.getexif()


def test_archive_as_multipart_file_part(client, survey):
    archive = _zip({"a.jpg": photo(31), "b.jpg": photo(32)})
    r = client.post(f"/v1/surveys/{survey}/archive", files=[("archive", ("survey.zip", archive, "application/zip"))])
    assert r.status_code == 201 and len(r.json()["accepted"]) == 2


def test_zip_bombs_are_refused_by_size_and_by_file_count(client, survey, monkeypatch):
    settings = get_settings()
    monkeypatch.setattr(settings, "max_archive_bytes", 5_000_000)
    monkeypatch.setattr(settings, "max_archive_files", 20)
    bomb = _zip({"zeros.jpg": b"\x00" * 20_000_000})  # 20 MB of zeros in ~20 kB
    assert len(bomb) < 100_000
    r = client.post(f"/v1/surveys/{survey}/archive", content=bomb, headers={"Content-Type": "application/zip"})
    assert r.status_code == 413 and "zip bomb" in r.json()["error"]["detail"]
    many = _zip({f"f{i}.jpg": b"x" for i in range(21)})
    r = client.post(f"/v1/surveys/{survey}/archive", content=many, headers={"Content-Type": "application/zip"})
    assert r.status_code == 413 and "21 files" in r.json()["error"]["detail"]


def test_archive_entry_over_the_per_file_limit_is_rejected_alone(client, survey, monkeypatch):
    monkeypatch.setattr(get_settings(), "max_upload_bytes", 50_000)
    archive = _zip({"big.jpg": b"\xff\xd8\xff" + b"\x00" * 60_000, "ok.jpg": photo(41)})
    r = client.post(f"/v1/surveys/{survey}/archive", content=archive, headers={"Content-Type": "application/zip"})
    assert r.status_code == 207
    assert _by_file(r.json())["big.jpg"]["status"] == 413 and r.json()["accepted"][0]["file"] == "ok.jpg"
