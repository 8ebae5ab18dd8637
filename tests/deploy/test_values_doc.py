"""Every values.yaml key carries a `# --` doc line and the README table is current."""

from __future__ import annotations

from tests.deploy.values_doc import CHART, parse, render_readme, undocumented


def test_every_values_key_has_a_doc_line():
    assert undocumented(parse((CHART / "values.yaml").read_text())) == []


def test_a_missing_doc_line_is_caught():
    text = "# -- a group\ngroup:\n  # -- doc\n  a: 1\n  b: 2\n# -- whole object\nobj:\n  x: 1\nlist:\n  - name: y\n"
    assert undocumented(parse(text)) == ["group.b", "list"]


def test_readme_values_table_is_up_to_date():
    readme = (CHART / "README.md").read_text()
    assert render_readme(readme, (CHART / "values.yaml").read_text()) == readme, \
        "run: python -m tests.deploy.values_doc"
