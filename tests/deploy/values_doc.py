"""Check the `# --` doc lines of charts/labelfree/values.yaml and build the README values table.

Convention (as helm-docs): a `# --` line directly above a key documents it. A documented key
whose children carry no doc lines of their own is one value (its whole mapping or list is
the default), so its children need none. Every other key needs its own line.

    python -m tests.deploy.values_doc          # rewrite the table in charts/labelfree/README.md
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[2] / "charts" / "labelfree"
BEGIN, END = "<!-- values-table:begin -->", "<!-- values-table:end -->"
KEY = re.compile(r"^( *)([A-Za-z][\w.\-/]*):(?: (.*))?$")


@dataclass
class Entry:
    path: str
    doc: str | None


def parse(text: str) -> list[Entry]:
    """Every mapping key in file order, with its `# --` doc (None when it has none)."""
    entries: list[Entry] = []
    stack: list[tuple[int, str]] = []
    lines = text.splitlines()
    skip_deeper_than: int | None = None
    for i, line in enumerate(lines):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        indent = len(line) - len(line.lstrip())
        if skip_deeper_than is not None:
            if indent > skip_deeper_than or line.lstrip().startswith("- ") and indent == skip_deeper_than:
                continue
            skip_deeper_than = None
        m = KEY.match(line)
        if not m:
            continue
        stack = [s for s in stack if s[0] < indent] + [(indent, m.group(2))]
        prev = lines[i - 1].strip() if i else ""
        doc = prev[len("# --"):].strip() if prev.startswith("# --") else None
        entries.append(Entry(".".join(s[1] for s in stack), doc))
        if not m.group(3):
            # A block list below this key is one value: its items' keys are not values keys.
            nxt = next((ln for ln in lines[i + 1:] if ln.strip() and not ln.lstrip().startswith("#")), "")
            if nxt.lstrip().startswith("- "):
                skip_deeper_than = indent
    return entries


def _descendants(path: str, entries: list[Entry]) -> list[Entry]:
    return [e for e in entries if e.path.startswith(path + ".")]


def undocumented(entries: list[Entry]) -> list[str]:
    """Paths of keys that need a `# --` line and lack one."""
    leaves = {e.path for e in entries if e.doc is not None and not any(d.doc for d in _descendants(e.path, entries))}
    missing = []
    for e in entries:
        if e.doc is None and not any(e.path.startswith(leaf + ".") for leaf in leaves):
            missing.append(e.path)
    return missing


def _lookup(values: dict[str, Any], path: str) -> Any:
    node: Any = values
    for part in path.split("."):
        node = node[part]
    return node


def _type(value: Any) -> str:
    return {bool: "bool", int: "int", float: "float", str: "string", list: "list", dict: "object"}.get(
        type(value), "null" if value is None else type(value).__name__)


def table(text: str) -> str:
    """Markdown table: Key | Type | Default | Description, one row per documented value."""
    entries = parse(text)
    values = yaml.safe_load(text)
    rows = ["| Key | Type | Default | Description |", "|-----|------|---------|-------------|"]
    for e in entries:
        if e.doc is None or any(d.doc for d in _descendants(e.path, entries)):
            continue
        value = _lookup(values, e.path)
        default = json.dumps(value, separators=(",", ":")).replace("|", "\\|")
        doc = e.doc.replace("|", "\\|")
        rows.append(f"| `{e.path}` | {_type(value)} | `{default}` | {doc} |")
    return "\n".join(rows)


def render_readme(readme: str, values_text: str) -> str:
    """README with the text between the table markers replaced by a fresh table."""
    start, end = readme.index(BEGIN) + len(BEGIN), readme.index(END)
    return readme[:start] + "\n" + table(values_text) + "\n" + readme[end:]


if __name__ == "__main__":
    values_text = (CHART / "values.yaml").read_text()
    missing = undocumented(parse(values_text))
    if missing:
        sys.exit(f"values.yaml keys without a '# --' line: {', '.join(missing)}")
    readme_path = CHART / "README.md"
    readme_path.write_text(render_readme(readme_path.read_text(), values_text))
    print(f"wrote {readme_path}")
