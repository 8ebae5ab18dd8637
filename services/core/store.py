"""Object store: a local directory by default, S3-compatible when ``store_url`` is ``s3://``.

Keys are content-addressed for images (``images/sha256/ab/abcdef....jpg``); model artefacts
live under ``models/<model_id>/``. Local writes are atomic: a temp file in the same
directory, fsync, then rename, so a crash never leaves a half-written object visible.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Iterator, Protocol

from labelfree.core.errors import LabelfreeError, not_found


def content_key(data: bytes, suffix: str = "", prefix: str = "images") -> str:
    """``<prefix>/sha256/ab/<hex><suffix>`` for the bytes."""
    digest = hashlib.sha256(data).hexdigest()
    if suffix and not suffix.startswith("."):
        suffix = "." + suffix
    return f"{prefix}/sha256/{digest[:2]}/{digest}{suffix.lower()}"


def _check_key(key: str) -> str:
    path = PurePosixPath(key)
    if not key or path.is_absolute() or ".." in path.parts or "\\" in key:
        raise LabelfreeError("bad_request", f"invalid object key {key!r}")
    return key


class ObjectStore(Protocol):
    def put(self, key: str, data: bytes) -> str: ...
    def put_file(self, key: str, path: str | Path) -> str: ...
    def get(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def delete(self, key: str) -> None: ...
    def list(self, prefix: str) -> Iterator[str]: ...
    def local_path(self, key: str) -> Path: ...
    def put_bytes(self, data: bytes, suffix: str = "", prefix: str = "images") -> str: ...


class _Common:
    def put_bytes(self, data: bytes, suffix: str = "", prefix: str = "images") -> str:
        """Store bytes under their content hash; storing the same bytes twice is a no-op."""
        key = content_key(data, suffix, prefix)
        if not self.exists(key):
            self.put(key, data)
        return key

    def put_dir(self, prefix: str, directory: str | Path) -> list[str]:
        """Upload every file under ``directory`` to ``prefix/<relative path>``."""
        directory = Path(directory)
        keys = []
        for path in sorted(directory.rglob("*")):
            if path.is_file():
                keys.append(self.put_file(f"{prefix.rstrip('/')}/{path.relative_to(directory).as_posix()}", path))
        return keys

    def get_dir(self, prefix: str, directory: str | Path) -> Path:
        """Materialise every object under ``prefix`` into ``directory``."""
        directory = Path(directory)
        prefix = prefix.rstrip("/") + "/"
        for key in self.list(prefix):
            target = directory / key[len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(target, self.get(key))
        return directory


def atomic_write(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` (parents created) so readers see the old file or the whole new one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=target.suffix)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class LocalStore(_Common):
    """Objects as files under a root directory."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def put(self, key: str, data: bytes) -> str:
        atomic_write(self._path(key), data)
        return key

    def put_file(self, key: str, path: str | Path) -> str:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        os.close(fd)
        try:
            shutil.copyfile(path, tmp)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return key

    def get(self, key: str) -> bytes:
        path = self._path(key)
        if not path.is_file():
            raise not_found("object", key)
        return path.read_bytes()

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def list(self, prefix: str) -> Iterator[str]:
        base = self.root / _check_key(prefix.rstrip("/") or ".")
        start = base if base.is_dir() else base.parent
        for path in sorted(start.rglob("*")):
            if path.is_file() and not path.name.startswith(".tmp-"):
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    yield key

    def local_path(self, key: str) -> Path:
        path = self._path(key)
        if not path.is_file():
            raise not_found("object", key)
        return path


class S3Store(_Common):
    """Objects in an S3-compatible bucket (AWS, MinIO). S3 PUTs are atomic per object."""

    def __init__(self, url: str, *, endpoint_url: str | None, access_key: str | None,
                 secret_key: str | None, cache_dir: str | Path):
        import boto3  # only the cluster profile needs it

        rest = url[len("s3://"):]
        self.bucket, _, self.prefix = rest.partition("/")
        if not self.bucket:
            raise ValueError(f"store_url {url!r} names no bucket")
        self.prefix = self.prefix.strip("/")
        self.client = boto3.client(
            "s3", endpoint_url=endpoint_url, aws_access_key_id=access_key, aws_secret_access_key=secret_key
        )
        self.cache = LocalStore(cache_dir)

    def _k(self, key: str) -> str:
        _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes) -> str:
        self.client.put_object(Bucket=self.bucket, Key=self._k(key), Body=data)
        return key

    def put_file(self, key: str, path: str | Path) -> str:
        self.client.upload_file(str(path), self.bucket, self._k(key))
        return key

    def get(self, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._k(key))["Body"].read()
        except self.client.exceptions.NoSuchKey:
            raise not_found("object", key) from None

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._k(key))
            return True
        except Exception:  # botocore raises ClientError 404
            return False

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._k(key))

    def list(self, prefix: str) -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        strip = len(self.prefix) + 1 if self.prefix else 0
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._k(prefix)):
            for item in page.get("Contents", []):
                yield item["Key"][strip:]

    def local_path(self, key: str) -> Path:
        """A local copy (cached by key) for code that needs a file, e.g. ONNX Runtime."""
        if not self.cache.exists(key):
            self.cache.put(key, self.get(key))
        return self.cache.local_path(key)


@lru_cache(maxsize=4)
def _store_for(url: str, endpoint: str | None, access: str | None, secret: str | None, cache: str) -> ObjectStore:
    if url.startswith("s3://"):
        return S3Store(url, endpoint_url=endpoint, access_key=access, secret_key=secret, cache_dir=cache)
    return LocalStore(url)


def get_store() -> ObjectStore:
    from labelfree.core.settings import get_settings

    s = get_settings()
    return _store_for(s.store_url, s.s3_endpoint_url, s.s3_access_key, s.s3_secret_key, str(s.data_dir / "s3-cache"))
