"""The images install labelfree as a built wheel (`pip install --no-deps .`), not editable.
A sub-package missing from pyproject's `packages` list works in the dev venv and is absent
from every image; build the wheel and compare it with services/."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.deploy.chart import ROOT

# Files the running services need: code, migrations, protos and package data.
RUNTIME_SUFFIXES = {".py", ".proto", ".json", ".ini", ".mako", ".html"}


def test_wheel_carries_every_runtime_file_under_services(tmp_path):
    # Offline build with this venv's backend; pyproject asks for setuptools>=77 (an SPDX licence string).
    setuptools = pytest.importorskip("setuptools")
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip(f"setuptools {setuptools.__version__} < 77 in this venv; cannot build offline")
    # Build from a copy: setuptools writes build/ and *.egg-info next to pyproject.toml.
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(ROOT / "pyproject.toml", src)
    shutil.copytree(ROOT / "services", src / "services", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                          "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    # setuptools ships a data-only sub-package today and warns that it will stop doing so
    assert "absent from the `packages` configuration" not in out.stdout + out.stderr, out.stderr[-2000:]
    (whl,) = (tmp_path / "dist").glob("labelfree-*.whl")
    names = set(zipfile.ZipFile(whl).namelist())
    wanted = {"labelfree/" + p.relative_to(src / "services").as_posix()
              for p in (src / "services").rglob("*") if p.is_file() and p.suffix in RUNTIME_SUFFIXES}
    missing = sorted(wanted - names)
    assert not missing, f"not in the wheel (add the sub-package to pyproject packages / package-data): {missing}"
    assert "labelfree/cli.py" in names and any(n.endswith("entry_points.txt") for n in names)
