"""Factories and waiting helpers shared by the test tiers."""

from __future__ import annotations

import io
import time

import numpy as np
from PIL import Image


def wait_for_job(job_id: str, states=("succeeded", "failed", "cancelled"), timeout: float = 60.0):
    """Poll the job row until it reaches one of ``states``; return the row."""
    from labelfree.core.db import session_scope
    from labelfree.core.models import Job

    deadline = time.monotonic() + timeout
    state = None
    while time.monotonic() < deadline:
        with session_scope() as s:
            job = s.get(Job, job_id)
            state = job.state
            if state in states:
                return job
        time.sleep(0.2)
    raise TimeoutError(f"job {job_id} still {state} after {timeout}s")


def make_job(kind="noop", params=None, **kw) -> str:
    from labelfree.core import jobs
    from labelfree.core.db import session_scope

    with session_scope() as s:
        return jobs.create_job(s, kind, params or {}, **kw).id


def jpeg_bytes(width: int = 64, height: int = 48, color=(200, 30, 30), exif=None) -> bytes:
    """A small solid JPEG; ``exif`` is a PIL Image.Exif to embed."""
    img = Image.fromarray(np.full((height, width, 3), color, dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", **({"exif": exif} if exif is not None else {}))
    return buf.getvalue()
