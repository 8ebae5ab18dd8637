"""Print the requirement lines of the labelfree distribution for the given extras.

The image build installs these (under constraints.txt) in a layer of its own, before any
source is copied, so editing code does not reinstall torch. Usage:
    python requirements.py pyproject.toml ml ingest explainer inference > requirements.txt
"""

from __future__ import annotations

import sys
import tomllib


def requirements(pyproject: str, extras: list[str]) -> list[str]:
    """Base dependencies plus each named extra, in order, without duplicates.

    Raises ValueError naming an extra the project does not declare.
    """
    with open(pyproject, "rb") as fh:
        project = tomllib.load(fh)["project"]
    declared = project.get("optional-dependencies", {})
    lines = list(project.get("dependencies", []))
    for extra in extras:
        if extra not in declared:
            raise ValueError(f"unknown extra {extra!r}; declared: {sorted(declared)}")
        lines.extend(declared[extra])
    return list(dict.fromkeys(lines))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: requirements.py PYPROJECT [EXTRA ...]")
    print("\n".join(requirements(sys.argv[1], sys.argv[2:])))
