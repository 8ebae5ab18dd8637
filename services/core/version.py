"""The code version recorded in every model manifest."""

from __future__ import annotations

import subprocess
from functools import lru_cache
from pathlib import Path

import labelfree


@lru_cache(maxsize=1)
def code_version() -> str:
    """Package version plus the git commit when run from a checkout."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(labelfree.__file__).parent,
                             capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        rev = ""
    return f"{labelfree.__version__}+{rev}" if rev else labelfree.__version__
