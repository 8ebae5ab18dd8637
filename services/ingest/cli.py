"""Ingest commands: ``labelfree dataset build`` and ``labelfree devsearch``.

``dataset build`` needs no servers: it runs the same pipeline as the ingest job and
writes ``OUT/positive/``, ``OUT/negative/``, ``OUT/manifest.jsonl`` and ``OUT/summary.json``
(ready for ``train-classifier --pos OUT/positive --neg OUT/negative``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from labelfree.core.errors import LabelfreeError

app = typer.Typer(no_args_is_help=True, add_completion=False)
dataset_app = typer.Typer(no_args_is_help=True, help="Build labelled datasets from image search.")
app.add_typer(dataset_app, name="dataset")
console = Console(stderr=True)


def _pairs(values: list[str], flag: str) -> dict[str, str]:
    out = {}
    for value in values:
        key, sep, target = value.partition("=")
        if not sep or not key.strip() or not target.strip():
            raise LabelfreeError("bad_request", f"{flag} must look like QUERY=SUBFOLDER, got {value!r}")
        out[key.strip()] = target.strip()
    return out


@dataset_app.command("build")
def build(
    query: str = typer.Argument(..., help="what the positives show, e.g. 'snow leopard'"),
    provider: str = typer.Option("openverse", help="openverse | inaturalist | wikimedia | dir"),
    positives: int = typer.Option(1, min=1, help="pages of positive results"),
    page_size: int = typer.Option(20, min=1, help="results per page (Openverse anonymous: at most 20)"),
    negatives: Optional[str] = typer.Option(None, help="'random:K': K images for each random English word"),
    random_words: int = typer.Option(10, min=1, help="how many random words for random:K"),
    hard_negative: List[str] = typer.Option([], "--hard-negative", help="a hard-negative query (repeatable)"),
    hard_negative_pages: int = typer.Option(1, min=1),
    out: Optional[Path] = typer.Option(None, help="output folder (default ./dataset-<query>)"),
    base_url: Optional[str] = typer.Option(None, help="provider API base URL (e.g. a devsearch server)"),
    dir: Optional[Path] = typer.Option(None, "--dir", help="root folder for --provider dir"),
    alias: List[str] = typer.Option([], help="dir provider: QUERY=SUBFOLDER (repeatable)"),
    licence: List[str] = typer.Option([], help="Openverse licence filter, e.g. by, cc0 (repeatable)"),
    client_id: Optional[str] = typer.Option(None, envvar="LABELFREE_OPENVERSE_CLIENT_ID"),
    client_secret: Optional[str] = typer.Option(None, envvar="LABELFREE_OPENVERSE_CLIENT_SECRET"),
    min_side: int = typer.Option(64, min=1),
    workers: int = typer.Option(16, min=1, help="concurrent downloads"),
    per_host: int = typer.Option(8, min=1, help="concurrent downloads per host"),
    seed: int = typer.Option(0),
) -> None:
    """Search, download, validate, strip GPS, dedupe; write a labelled folder and its manifest."""
    import numpy as np

    from labelfree.ingest.dataset import build_dataset
    from labelfree.ingest.download import DownloadConfig, Downloader
    from labelfree.ingest.providers import PROVIDERS, make_provider
    from labelfree.ingest.providers.localdir import slug
    from labelfree.ingest.tasks import parse_negatives, request_from_params

    if provider not in PROVIDERS:
        raise LabelfreeError("bad_request", f"unknown provider {provider!r}; one of {', '.join(PROVIDERS)}")
    options: dict = {}
    if provider == "dir":
        if dir is None:
            raise LabelfreeError("bad_request", "--provider dir needs --dir FOLDER")
        options = {"root": dir, "aliases": _pairs(alias, "--alias")}
    else:
        if base_url:
            options["base_url"] = base_url
        if provider == "openverse":
            options.update(licences=licence, client_id=client_id, client_secret=client_secret)
    try:
        per_word = parse_negatives(negatives)
        request = request_from_params({
            "query": query, "positive_pages": positives, "page_size": page_size,
            "random_words": random_words if per_word else 0, "per_word": per_word,
            "hard_negatives": hard_negative, "hard_negative_pages": hard_negative_pages, "min_side": min_side,
            "seed": seed})
        source = make_provider(provider, **options)
        config = DownloadConfig(workers=workers, per_host=per_host)
    except ValueError as exc:
        raise LabelfreeError("bad_request", str(exc)) from exc
    out = out or Path(f"dataset-{slug(query)}")
    out.mkdir(parents=True, exist_ok=True)

    def sink(image) -> str:
        target = out / image.label / f"{image.sha256}{image.suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(image.data)
        return target.relative_to(out).as_posix()

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task(f"dataset {query!r}", total=1.0)
        with Downloader(config) as downloader:
            result = build_dataset(request, source, downloader=downloader, sink=sink,
                                   rng=np.random.default_rng(seed),
                                   progress=lambda f: bar.update(task, completed=f))
    source.close()
    with open(out / "manifest.jsonl", "w", encoding="utf-8") as fh:
        for image in result.images:
            fh.write(json.dumps(image.manifest_row(), sort_keys=True) + "\n")
    (out / "summary.json").write_text(json.dumps(result.summary, indent=2))
    s = result.summary
    console.print(f"{s['images']} images in {out} ({s['labels']}); duplicates {s['duplicates']}; "
                  f"failures {s['failures'] or 'none'}")


@app.command("devsearch")
def devsearch(
    root: Path = typer.Option(..., "--root", help="folder tree; a query maps to a sub-folder"),
    host: str = typer.Option("127.0.0.1"),
    port: int = typer.Option(8110),
    alias: List[str] = typer.Option([], help="QUERY=SUBFOLDER (repeatable), e.g. lion=lion/pool"),
    fallback: List[str] = typer.Option([], help="sub-folder(s) sampled for queries with no folder"),
    licence: str = typer.Option("by", help="licence code every result reports"),
    licence_version: str = typer.Option("4.0"),
) -> None:
    """Serve an Openverse-compatible search API over a folder tree (tests and offline demos)."""
    from labelfree.ingest.devsearch import DevSearch, make_server

    if not root.is_dir():
        raise LabelfreeError("bad_request", f"--root {root} is not a directory")
    try:
        search = DevSearch(root, aliases=_pairs(alias, "--alias"), fallback=fallback, licence=licence,
                           licence_version=licence_version)
        server = make_server(search, host, port)
    except (ValueError, OSError) as exc:
        raise LabelfreeError("bad_request", str(exc)) from exc
    console.print(f"devsearch over {search.index.root}: Openverse API at "
                  f"http://{host}:{server.server_address[1]}/v1/  (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
