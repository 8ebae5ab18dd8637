"""Camera-trap surveys: create, and ingest uploaded files or zip archives.

Every file is judged alone. A bad one becomes a :class:`Rejection` (file name, reason,
4xx status) and the good ones are stored: GPS stripped, upright, capture time and camera
in columns. Archives are checked before anything is extracted: file count and total
declared size (zip bombs), absolute paths and ``..`` (path traversal); each entry is then
read with a byte cap, so a lying header cannot inflate past it.
"""

from __future__ import annotations

import hashlib
import unicodedata
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import PurePosixPath, PureWindowsPath
from typing import BinaryIO, Iterable, Iterator

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from labelfree.core.errors import LabelfreeError, not_found
from labelfree.core.images import ImageDecodeError, sanitize_image
from labelfree.core.models import Image, Survey
from labelfree.core.store import ObjectStore
from labelfree.ingest.dedupe import HASH_PREVIEW_SIDE, perceptual_hash
from labelfree.ingest.download import sniff_image_type

FUZZ_DEGREES = 0.1  # ~11 km of latitude; a site is findable to the valley, not to the tree
IGNORED_PREFIXES = ("__MACOSX/",)
IGNORED_NAMES = (".DS_Store", "Thumbs.db", "desktop.ini")


@dataclass(frozen=True)
class Rejection:
    file: str
    reason: str
    status: int
    code: str


@dataclass
class UploadReport:
    """What one upload did: rows accepted, files rejected (with 4xx status each), entries ignored."""

    accepted: list[dict] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"accepted": self.accepted, "rejected": [asdict(r) for r in self.rejected], "ignored": self.ignored}


def fuzz_coordinates(latitude: float | None, longitude: float | None, *, exact: bool = False
                     ) -> tuple[float | None, float | None]:
    """Validate a site position and, unless ``exact``, round it to ``FUZZ_DEGREES`` (~10 km)."""
    if (latitude is None) != (longitude is None):
        raise LabelfreeError("invalid", "give both latitude and longitude, or neither")
    if latitude is None or longitude is None:
        return None, None
    if not -90 <= latitude <= 90 or not -180 <= longitude <= 180:
        raise LabelfreeError("invalid", f"coordinates ({latitude}, {longitude}) are out of range")
    if exact:
        return float(latitude), float(longitude)
    return round(round(latitude / FUZZ_DEGREES) * FUZZ_DEGREES, 4), round(round(longitude / FUZZ_DEGREES)
                                                                         * FUZZ_DEGREES, 4)


def create_survey(session: Session, *, name: str, site: str | None = None, camera: str | None = None,
                  latitude: float | None = None, longitude: float | None = None,
                  exact_coordinates: bool = False) -> Survey:
    if not name.strip():
        raise LabelfreeError("invalid", "survey name must not be empty")
    lat, lon = fuzz_coordinates(latitude, longitude, exact=exact_coordinates)
    survey = Survey(name=name.strip(), site=site, camera=camera, latitude=lat, longitude=lon,
                    coords_exact=bool(exact_coordinates and lat is not None))
    session.add(survey)
    session.flush()
    return survey


def get_survey(session: Session, survey_id: str) -> Survey:
    survey = session.get(Survey, survey_id)
    if survey is None:
        raise not_found("survey", survey_id)
    return survey


def clean_name(name: str) -> str:
    """NFC-normalised file name with ``/`` separators (unicode kept)."""
    return unicodedata.normalize("NFC", name.replace("\\", "/"))


def check_member_name(name: str) -> str | None:
    """Why an archive entry name is unsafe (absolute path, drive, ``..``), or None if it is fine."""
    unified = name.replace("\\", "/")
    if unified.startswith("/") or PureWindowsPath(name).drive or PureWindowsPath(name).is_absolute():
        return "absolute path in archive"
    if ".." in PurePosixPath(unified).parts:
        return "path traversal ('..') in archive"
    if "\x00" in name:
        return "NUL byte in file name"
    return None


def iter_archive(fileobj: BinaryIO, *, max_files: int, max_total_bytes: int, max_file_bytes: int,
                 report: UploadReport) -> Iterator[tuple[str, bytes]]:
    """``(name, bytes)`` for each acceptable entry of a zip; unsafe entries go to ``report.rejected``.

    Raises LabelfreeError (413) for a whole archive over ``max_files`` entries or ``max_total_bytes``
    declared uncompressed, and (415) for something that is not a zip.
    """
    try:
        archive = zipfile.ZipFile(fileobj)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise LabelfreeError("unsupported_media_type", f"archive: not a zip file ({exc})") from exc
    with archive:
        entries = [info for info in archive.infolist() if not info.is_dir()]
        if len(entries) > max_files:
            raise LabelfreeError("payload_too_large",
                                 f"archive: {len(entries)} files, over the limit of {max_files}")
        total = sum(info.file_size for info in entries)
        if total > max_total_bytes:
            raise LabelfreeError("payload_too_large", f"archive: {total} bytes uncompressed, over the "
                                                      f"limit of {max_total_bytes} (zip bomb?)")
        for info in entries:
            name = clean_name(info.filename)
            base = PurePosixPath(name).name
            if name.startswith(IGNORED_PREFIXES) or base in IGNORED_NAMES or base.startswith("._"):
                report.ignored.append(name)
                continue
            problem = check_member_name(info.filename)
            if problem:
                report.rejected.append(Rejection(name, problem, 400, "bad_request"))
                continue
            if info.flag_bits & 0x1:
                report.rejected.append(Rejection(name, "encrypted archive entry", 422, "invalid"))
                continue
            if info.file_size > max_file_bytes:
                report.rejected.append(Rejection(name, f"{info.file_size} bytes, over the per-file limit of "
                                                       f"{max_file_bytes}", 413, "payload_too_large"))
                continue
            try:
                with archive.open(info) as member:
                    data = member.read(max_file_bytes + 1)  # never trust the header's size
            except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError, EOFError) as exc:
                report.rejected.append(Rejection(name, f"unreadable archive entry: {exc}", 422, "invalid"))
                continue
            if len(data) > max_file_bytes:
                report.rejected.append(Rejection(name, f"inflates past the per-file limit of {max_file_bytes}",
                                                 413, "payload_too_large"))
                continue
            yield name, data


def ingest_files(session: Session, store: ObjectStore, survey: Survey, files: Iterable[tuple[str, bytes]], *,
                 max_pixels: int, max_file_bytes: int, report: UploadReport | None = None) -> UploadReport:
    """Validate, sanitise and store each ``(name, bytes)``; returns what was accepted and rejected."""
    report = report or UploadReport()
    known = {sha: name for sha, name in session.execute(
        select(Image.sha256, Image.file_name).where(Image.survey_id == survey.id))}
    for raw_name, data in files:
        name = clean_name(raw_name or "") or "(unnamed)"
        rejection = _check_file(name, data, max_file_bytes)
        if rejection:
            report.rejected.append(rejection)
            continue
        try:
            clean = sanitize_image(data, max_pixels=max_pixels, preview_side=HASH_PREVIEW_SIDE)
        except ImageDecodeError as exc:
            status = 413 if exc.code == "payload_too_large" else 422
            reason = exc.detail if status == 413 else f"truncated or corrupt image: {exc.detail}"
            report.rejected.append(Rejection(name, reason, status, exc.code))
            continue
        sha = hashlib.sha256(clean.data).hexdigest()
        if sha in known:
            report.rejected.append(Rejection(name, f"duplicate of {known[sha]!r} in this survey", 409, "conflict"))
            continue
        key = store.put_bytes(clean.data, clean.suffix)
        row = Image(sha256=sha, store_key=key, survey_id=survey.id, label="unlabelled", file_name=name,
                    width=clean.width, height=clean.height, content_type=clean.content_type,
                    phash=perceptual_hash(clean.image), provider="upload",
                    captured_at=clean.metadata.captured_at, camera_make=clean.metadata.camera_make,
                    camera_model=clean.metadata.camera_model)
        try:
            with session.begin_nested():  # a concurrent upload of the same photo loses cleanly
                session.add(row)
        except IntegrityError:
            report.rejected.append(Rejection(name, "duplicate of a photo uploaded concurrently", 409, "conflict"))
            continue
        known[sha] = name
        report.accepted.append(image_summary(row))
    return report


def _check_file(name: str, data: bytes, max_file_bytes: int) -> Rejection | None:
    problem = check_member_name(name)
    if problem:  # names end up in exports (MegaDetector "file"): keep them relative and inside
        return Rejection(name, problem.replace(" in archive", ""), 400, "bad_request")
    if not data:
        return Rejection(name, "empty file", 400, "bad_request")
    if len(data) > max_file_bytes:
        return Rejection(name, f"{len(data)} bytes, over the per-file limit of {max_file_bytes}", 413,
                         "payload_too_large")
    if sniff_image_type(data) is None:
        return Rejection(name, f"not an image (starts with {data[:8]!r})", 415, "unsupported_media_type")
    return None


def image_summary(row: Image) -> dict:
    return {"id": row.id, "file": row.file_name, "sha256": row.sha256, "store_key": row.store_key,
            "width": row.width, "height": row.height,
            "captured_at": row.captured_at.isoformat() if row.captured_at else None,
            "camera_make": row.camera_make, "camera_model": row.camera_model}


def survey_to_dict(session: Session, survey: Survey, *, limit: int = 1000, offset: int = 0) -> dict:
    rows = session.execute(select(Image).where(Image.survey_id == survey.id)
                           .order_by(Image.file_name, Image.id).limit(limit).offset(offset)).scalars().all()
    count = session.query(Image).filter(Image.survey_id == survey.id).count()
    return {"id": survey.id, "name": survey.name, "site": survey.site, "camera": survey.camera,
            "latitude": survey.latitude, "longitude": survey.longitude, "coords_exact": survey.coords_exact,
            "created_at": survey.created_at.isoformat() if survey.created_at else None,
            "image_count": count, "images": [image_summary(r) for r in rows]}
