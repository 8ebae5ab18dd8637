"""``labelfree dataset build`` and ``labelfree devsearch`` through the real command line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def _labelfree(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "labelfree.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_dataset_build_writes_labelled_folders_and_manifest(devsearch_url, tmp_path):
    out = tmp_path / "ds"
    r = _labelfree("dataset", "build", "lion", "--base-url", devsearch_url, "--positives", "2", "--page-size", "10",
                   "--negatives", "random:2", "--random-words", "3", "--hard-negative", "tiger", "--min-side", "32",
                   "--out", str(out))
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    assert len(rows) == summary["images"] == len(list((out / "positive").iterdir())) + len(
        list((out / "negative").iterdir()))
    assert summary["labels"]["positive"] == 10 and summary["duplicates"]["conflict_groups"] == 1
    assert all((out / row["store_key"]).is_file() for row in rows)


def test_offline_provider_exits_2_naming_the_offline_options(tmp_path):
    r = _labelfree("dataset", "build", "lion", "--base-url", "http://openverse.invalid/v1/", "--out",
                   str(tmp_path / "x"))
    assert r.returncode == 2
    message = " ".join(r.stderr.split())
    assert message.startswith("error:") or "error:" in message
    assert "--provider dir" in message and "devsearch" in message


@pytest.mark.parametrize("args, needle", [
    (["--negatives", "words:3"], "random:K"),
    (["--provider", "bing"], "unknown provider"),
    (["--provider", "dir"], "--dir"),
])
def test_bad_options_exit_2_with_a_reason(tmp_path, args, needle):
    r = _labelfree("dataset", "build", "lion", "--out", str(tmp_path / "x"), *args)
    assert r.returncode == 2 and needle in r.stderr


def test_devsearch_rejects_a_missing_root(tmp_path):
    r = _labelfree("devsearch", "--root", str(tmp_path / "nope"))
    assert r.returncode == 2 and "not a directory" in r.stderr
