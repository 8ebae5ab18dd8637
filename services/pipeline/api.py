"""Projects and runs: ``POST /v1/projects`` starts the whole chain; handlers only validate,
write rows, enqueue and read state."""

from __future__ import annotations

import os
import uuid
from typing import Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field, model_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from labelfree.core import runs
from labelfree.core.db import get_session, session_scope
from labelfree.core.errors import LabelfreeError, not_found
from labelfree.core.models import Project, Run

router = APIRouter(tags=["projects"])


class ProjectRequest(BaseModel):
    query: str = Field(min_length=1, max_length=200, description='the concept, e.g. "snow leopard"')
    provider: Literal["openverse", "inaturalist", "wikimedia", "dir"] = "openverse"
    positives: int = Field(200, ge=10, le=10_000, description="positive images to collect")
    negatives: int = Field(10, ge=0, le=1000, description="images per random-word (noise-contrastive) query")
    random_words: int = Field(10, ge=0, le=200, description="number of random-word negative queries")
    hard_negatives: list[str] = Field(default_factory=list, max_length=50)
    pos_dirs: list[str] = Field(default_factory=list, description="provider=dir: folders of positives")
    neg_dirs: list[str] = Field(default_factory=list, description="provider=dir: folders of negatives")
    options: dict = Field(default_factory=dict, description="per-step options: train, explain, detector, deploy")

    @model_validator(mode="after")
    def _dirs_for_dir_provider(self):
        if self.provider == "dir" and not (self.pos_dirs and self.neg_dirs):
            raise ValueError("provider 'dir' needs pos_dirs and neg_dirs")
        unknown = set(self.options) - {"train", "explain", "detector", "deploy", "ingest"}
        if unknown:
            raise ValueError(f"unknown option groups {sorted(unknown)}")
        return self

    def run_params(self) -> dict:
        """Per-step job parameters; the ingest part in the ingest job's own vocabulary."""
        page_size = _page_size(self.provider)
        ingest = {
            "provider": self.provider, "page_size": page_size,
            "positive_pages": -(-self.positives // page_size),
            "random_words": self.random_words if self.negatives else 0, "per_word": self.negatives,
            "hard_negatives": list(self.hard_negatives),
        }
        if self.provider == "dir":
            ingest.update(_dir_provider_params(self.query, self.pos_dirs, self.neg_dirs, page_size))
        ingest.update(self.options.get("ingest", {}))
        return {"ingest": ingest, **{k: v for k, v in self.options.items() if k != "ingest"}}


def _page_size(provider: str) -> int:
    """Results per page: 100, or less where the provider serves less to any client.

    Openverse answers an anonymous client (the API cannot know the worker's credentials) at
    most 20 per page and Wikimedia 50; a larger page fails every search of the ingest job.
    """
    from labelfree.ingest.providers.inaturalist import MAX_PER_PAGE
    from labelfree.ingest.providers.openverse import ANONYMOUS_MAX_PAGE_SIZE
    from labelfree.ingest.providers.wikimedia import MAX_LIMIT

    limits = {"openverse": ANONYMOUS_MAX_PAGE_SIZE, "wikimedia": MAX_LIMIT, "inaturalist": MAX_PER_PAGE}
    return min(100, limits.get(provider, 100))


def _dir_provider_params(query: str, pos_dirs: list[str], neg_dirs: list[str], page_size: int) -> dict:
    """Folders as search results: the query names the positive folder, each negative folder
    is a hard-negative "query", all through the dir provider's aliases under one root."""
    from pathlib import Path

    dirs = [Path(d).expanduser().resolve() for d in [*pos_dirs, *neg_dirs]]
    missing = [str(d) for d in dirs if not d.is_dir()]
    if missing:
        raise LabelfreeError("bad_request", f"not folders: {', '.join(missing)}")
    if len(pos_dirs) != 1:
        raise LabelfreeError("bad_request", "give one positive folder (its sub-folders are read)")
    root = Path(os.path.commonpath([str(d) for d in dirs]))
    if root in dirs:  # a folder that holds the others: search from its parent so aliases stay inside
        root = root.parent
    aliases = {query: str(dirs[0].relative_to(root))}
    negatives = []
    for folder in dirs[1:]:
        # named by its folder, as the report's dataset tables show it ("bigcats/tiger")
        name = str(folder.relative_to(root))
        if name in aliases:  # the same folder twice, or one named like the query
            name = f"{name} ({len(aliases)})"
        aliases[name] = str(folder.relative_to(root))
        negatives.append(name)
    largest = max(sum(1 for _ in d.rglob("*")) for d in dirs)
    return {"random_words": 0, "per_word": 0, "hard_negatives": negatives,
            "hard_negative_pages": -(-largest // page_size),
            "provider_options": {"root": str(root), "aliases": aliases}}


def start(query: str, params: dict) -> dict:
    """Create project + run and send its first step. Shared by the API and the CLI's embedded path."""
    with session_scope() as session:
        run = runs.create_run(session, query, params)
        run_id, project_id = run.id, run.project_id
        _run, job = runs.next_step(session, run_id)
    runs.send_step(job, from_api=True)
    return {"project_id": project_id, "run_id": run_id, "job_id": job.id}


@router.post("/v1/projects", status_code=202)
def create_project(body: ProjectRequest) -> dict:
    return start(body.query, body.run_params())


@router.get("/v1/projects/{project_id}")
def read_project(project_id: uuid.UUID, session: Session = Depends(get_session)) -> dict:
    project = session.get(Project, str(project_id))
    if project is None:
        raise not_found("project", project_id)
    rows = session.execute(select(Run).where(Run.project_id == project.id).order_by(Run.created_at)).scalars()
    return {"id": project.id, "name": project.name, "query": project.query,
            "runs": [runs.run_to_dict(session, run) for run in rows]}


@router.get("/v1/runs/{run_id}")
def read_run(run_id: uuid.UUID, session: Session = Depends(get_session)) -> dict:
    run = session.get(Run, str(run_id))
    if run is None:
        raise not_found("run", run_id)
    return runs.run_to_dict(session, run)


@router.post("/v1/runs/{run_id}/resume", status_code=202)
def resume(run_id: uuid.UUID) -> dict:
    with session_scope() as session:
        run, job = runs.resume_run(session, str(run_id))
        state = run.state
    if job is not None and job.state == "queued":
        runs.send_step(job, from_api=True)
    return {"run_id": str(run_id), "state": state, "job_id": job.id if job else None}
