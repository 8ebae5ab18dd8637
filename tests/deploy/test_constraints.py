"""The images install `-c constraints.txt -r <base + all extras>`; a pin that contradicts a
dependency's own requirement makes that step fail with ResolutionImpossible on a clean
build, while an existing venv hides it. Walk the requirement graph through the installed
metadata (same Python, same platform as the image) and check every pin satisfies it."""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, distribution

import pytest

from tests.deploy.chart import ROOT

packaging = pytest.importorskip("packaging.requirements")
from packaging.requirements import Requirement  # noqa: E402
from packaging.utils import canonicalize_name  # noqa: E402
from packaging.version import Version  # noqa: E402

EXTRAS = ["ml", "ingest", "explainer", "inference"]


def pins() -> dict[str, Version]:
    found = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            found[canonicalize_name(name.split("[")[0])] = Version(version.split(";")[0].strip())
    return found


def conflicts(top: list[str], pinned: dict[str, Version]) -> list[str]:
    """Requirements (reached from ``top`` with their extras) that a pinned version breaks."""
    problems: list[str] = []
    queue = [(Requirement(r), "image") for r in top]
    seen: set[tuple[str, frozenset[str]]] = set()
    while queue:
        req, parent = queue.pop()
        name = canonicalize_name(req.name)
        pin = pinned.get(name)
        if pin is not None and not req.specifier.contains(pin, prereleases=True):
            problems.append(f"{parent} requires {req}, constraints pin {name}=={pin}")
        key = (name, frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            continue  # not installed here: nothing to read; the image build will resolve it
        if pin is not None and Version(dist.version).public != pin.public:
            continue  # the venv holds another version, whose metadata says nothing about the pin
        for raw in dist.requires or []:
            dep = Requirement(raw)
            if dep.marker is None or any(dep.marker.evaluate({"extra": e}) for e in ["", *req.extras]):
                queue.append((dep, f"{name}{'[' + ','.join(sorted(req.extras)) + ']' if req.extras else ''}"))
    return sorted(set(problems))


def test_constraints_pins_satisfy_every_requirement_the_images_install():
    if not (ROOT / "constraints.txt").is_file():
        pytest.skip("no constraints.txt yet")
    sys.path.insert(0, str(ROOT / "docker"))
    try:
        from requirements import requirements
    finally:
        sys.path.remove(str(ROOT / "docker"))
    assert conflicts(requirements(str(ROOT / "pyproject.toml"), EXTRAS), pins()) == []


def test_a_contradicting_pin_is_reported():
    problems = conflicts(["kombu[redis]"], {"packaging": Version("0.1")})
    if not problems:
        pytest.skip("kombu[redis] metadata not installed")
    assert "packaging==0.1" in problems[0]
