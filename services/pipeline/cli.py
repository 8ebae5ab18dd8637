"""``labelfree run``, ``status`` and ``report``: the whole pipeline through the API."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import List, Optional

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from labelfree.core.errors import LabelfreeError

app = typer.Typer()
console = Console(stderr=True)
STEPS = ("ingest", "train", "explain", "train_detector", "deploy")


def _api_url(api: str | None) -> str:
    if api:
        return api.rstrip("/")
    if os.environ.get("LABELFREE_API_URL"):
        return os.environ["LABELFREE_API_URL"].rstrip("/")
    from labelfree.core.settings import get_settings

    s = get_settings()
    return f"http://{s.api_host}:{s.ingest_port}"


def _call(method: str, url: str, **kw) -> dict:
    try:
        response = httpx.request(method, url, timeout=30, **kw)
    except httpx.HTTPError as exc:
        raise LabelfreeError("unavailable", f"cannot reach the labelfree API at {url} ({exc}); "
                                            "start it with `labelfree up` or set LABELFREE_API_URL") from exc
    if response.status_code >= 400:
        try:
            err = response.json()["error"]
            detail = err["detail"] if isinstance(err["detail"], str) else str(err["detail"])
        except Exception:
            detail = response.text[:300]
        raise LabelfreeError("bad_request", f"API said {response.status_code}: {detail}")
    return response.json()


def follow(base: str, run_id: str, poll: float = 1.0) -> dict:
    """Show one progress bar per step until the run ends; return the final run."""
    with Progress(TextColumn("{task.description:<15}"), BarColumn(), TextColumn("{task.percentage:>5.1f}%"),
                  TextColumn("{task.fields[state]}"), TimeElapsedColumn(), console=console) as progress:
        bars = {name: progress.add_task(name, total=1.0, state="pending", start=False) for name in STEPS}
        while True:
            run = _call("GET", f"{base}/v1/runs/{run_id}")
            for step in run["steps"]:
                bar = bars[step["step"]]
                if step["state"] != "pending":
                    progress.start_task(bar)
                progress.update(bar, completed=step["progress"], state=step["state"])
            if run["state"] in ("succeeded", "failed", "cancelled"):
                return run
            time.sleep(poll)


@app.command("run")
def run(
    query: str = typer.Argument(..., help='the concept, e.g. "snow leopard"'),
    provider: str = typer.Option("openverse", help="openverse | inaturalist | wikimedia | dir"),
    positives: int = typer.Option(200, help="positive images to collect"),
    negatives: int = typer.Option(10, help="images per random-word negative query (0: none)"),
    random_words: int = typer.Option(10, help="random-word negative queries"),
    hard_negative: List[str] = typer.Option([], "--hard-negative", help="a hard-negative query; repeat"),
    pos: List[Path] = typer.Option([], "--pos", help="provider dir: a folder of positives; repeat"),
    neg: List[Path] = typer.Option([], "--neg", help="provider dir: a folder of negatives; repeat"),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="search API base URL, e.g. a `labelfree "
                                           "devsearch` server: http://127.0.0.1:8110/v1/"),
    api: Optional[str] = typer.Option(None, help="API base URL (default: the local ingest service)"),
    detach: bool = typer.Option(False, help="print the run id and return at once"),
) -> None:
    """Go from a concept to a deployed detector: ingest, classifier, LIME boxes, detector, deploy."""
    if provider == "dir":
        missing = [str(p) for p in [*pos, *neg] if not p.is_dir()]
        if not pos or not neg or missing:
            raise LabelfreeError("bad_request", "--provider dir needs --pos DIR and --neg DIR that exist"
                                 + (f"; not folders: {', '.join(missing)}" if missing else ""))
    body = {"query": query, "provider": provider, "positives": positives, "negatives": negatives,
            "random_words": random_words, "hard_negatives": hard_negative,
            "pos_dirs": [str(p.resolve()) for p in pos], "neg_dirs": [str(p.resolve()) for p in neg]}
    if base_url:
        body["options"] = {"ingest": {"provider_options": {"base_url": base_url}}}
    base = _api_url(api)
    started = _call("POST", f"{base}/v1/projects", json=body)
    console.print(f"project {started['project_id']}  run [bold]{started['run_id']}[/]")
    if detach:
        typer.echo(started["run_id"])
        return
    final = follow(base, started["run_id"])
    if final["state"] != "succeeded":
        # one line, verbatim: the reason may hold paths and brackets that rich would wrap or parse
        console.print(f"run {final['state']}: {final.get('error')}", style="red", soft_wrap=True, markup=False)
        if provider != "dir" and "cannot reach" in (final.get("error") or ""):
            console.print("offline? --provider dir --pos DIR --neg DIR, or serve folders with `labelfree devsearch "
                          "--root DIR` and add --base-url http://127.0.0.1:8110/v1/", soft_wrap=True, markup=False)
        console.print(f"resume with: labelfree resume {final['id']}")
        raise typer.Exit(1)
    console.print(f"[green]done[/]: report with `labelfree report {final['id']} --out report.html`")
    typer.echo(final["id"])


@app.command("status")
def status(run_id: str, api: Optional[str] = typer.Option(None)) -> None:
    """Show each step of RUN_ID: state, progress, error."""
    run = _call("GET", f"{_api_url(api)}/v1/runs/{run_id}")
    console.print(f"run {run['id']}: [bold]{run['state']}[/]" + (f" ({run['error']})" if run.get("error") else ""))
    for step in run["steps"]:
        console.print(f"  {step['step']:<15} {step['state']:<10} {step['progress']:>6.1%}  {step.get('error') or ''}")


@app.command("resume")
def resume(run_id: str, api: Optional[str] = typer.Option(None), detach: bool = False) -> None:
    """Continue a failed or cancelled run from its last finished step."""
    base = _api_url(api)
    _call("POST", f"{base}/v1/runs/{run_id}/resume")
    if not detach:
        final = follow(base, run_id)
        if final["state"] != "succeeded":
            raise typer.Exit(1)


@app.command("report")
def report(
    run_id: str = typer.Argument(..., help="the run, as `labelfree run` printed it"),
    out: Path = typer.Option(..., "--out", help="the HTML file to write (one file, pictures inside)"),
    gt: Optional[Path] = typer.Option(None, "--gt", help="human boxes, COCO JSON; file_name matched by base name"),
    gt_images: Optional[Path] = typer.Option(None, "--gt-images", help="the folder of the human-boxed images"),
    tiles: int = typer.Option(12, "--tiles", min=1, max=60, help="pictures per grid"),
) -> None:
    """Write RUN_ID's report: photos and licences, classifier curves, teacher boxes, detector, timings.

    Reads the database and object store of this machine's settings (no API needed). A run that
    has not finished gets a report of what exists; the missing sections are named.
    """
    from labelfree.pipeline.gather import gather_report
    from labelfree.pipeline.report import render_report

    found = gather_report(run_id, gt=gt, gt_images=gt_images, tiles=tiles, progress=lambda m: console.print(m))
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    partial.write_text(render_report(found), encoding="utf-8")
    partial.replace(out)
    for line in found.missing:
        console.print(f"[yellow]missing[/] {line}", soft_wrap=True)
    console.print(f"report of run {run_id} ({found.run['state']}) -> {out}", soft_wrap=True)
