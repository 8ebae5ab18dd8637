"""The run report: one self-contained HTML file (images embedded) a field biologist would open.

``render_report(report)`` is pure: it takes a ``Report`` of plain data and returns HTML.
``labelfree.pipeline.gather`` fills a Report from a run's rows and objects.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field

import numpy as np
from PIL import Image


@dataclass
class Tile:
    """One picture in a grid: PNG/JPEG bytes and a caption."""

    data: bytes
    caption: str


@dataclass
class Report:
    title: str
    run: dict
    dataset: dict = field(default_factory=dict)  # summary, licences {name: n}, attribution rows
    classifier: dict = field(default_factory=dict)  # metrics incl. curves {roc: {fpr,tpr}, pr: {recall,precision}}
    lime_tiles: list[Tile] = field(default_factory=list)
    detector_tiles: list[Tile] = field(default_factory=list)
    detector: dict = field(default_factory=dict)  # metrics from training
    evaluation: dict | None = None  # {"detector": {...}, "teacher": {...}, "baselines": {...}}
    notes: list[str] = field(default_factory=list)


def _img_tag(data: bytes, alt: str, css: str = "") -> str:
    kind = "png" if data[:8] == b"\x89PNG\r\n\x1a\n" else "jpeg"
    return (f'<img alt="{html.escape(alt)}" class="{css}" '
            f'src="data:image/{kind};base64,{base64.b64encode(data).decode()}">')


def thumbnail(image: Image.Image | np.ndarray, max_side: int = 360) -> bytes:
    """JPEG bytes of an image shrunk to ``max_side`` (keeps the report small)."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    image = image.convert("RGB")
    image.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def _curve_svg(xs, ys, *, xlabel: str, ylabel: str, title: str, diagonal: bool) -> str:
    """A small line plot as inline SVG (no plotting library in the report path)."""
    w, h, pad = 300, 240, 36
    pts = " ".join(f"{pad + float(x) * (w - 2 * pad):.1f},{h - pad - float(y) * (h - 2 * pad):.1f}"
                   for x, y in zip(xs, ys))
    diag = (f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{pad}" stroke="#bbb" stroke-dasharray="4"/>'
            if diagonal else "")
    return (f'<svg class="curve" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" '
            f'aria-label="{html.escape(title)}"><rect x="{pad}" y="{pad}" width="{w - 2 * pad}" '
            f'height="{h - 2 * pad}" fill="#fafafa" stroke="#999"/>{diag}'
            f'<polyline points="{pts}" fill="none" stroke="#1f6f43" stroke-width="2"/>'
            f'<text x="{w / 2}" y="{h - 8}" text-anchor="middle">{xlabel}</text>'
            f'<text x="12" y="{h / 2}" transform="rotate(-90 12 {h / 2})" text-anchor="middle">{ylabel}</text>'
            f'<text x="{w / 2}" y="20" text-anchor="middle" font-weight="bold">{html.escape(title)}</text></svg>')


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "" if value is None else str(value)


def _grid(tiles: list[Tile], empty: str) -> str:
    if not tiles:
        return f"<p class='empty'>{html.escape(empty)}</p>"
    cells = "".join(f"<figure>{_img_tag(t.data, t.caption)}<figcaption>{html.escape(t.caption)}</figcaption></figure>"
                    for t in tiles)
    return f"<div class='grid'>{cells}</div>"


CSS = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1200px;color:#222;padding:0 1rem}
h1{margin-bottom:0}.sub{color:#666;margin-top:.2rem}section{margin:2rem 0}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ddd;padding:.3rem .6rem;text-align:left}
th{background:#f0f4f1}.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(220px,1fr));gap:.8rem}
figure{margin:0}figure img{width:100%;border-radius:4px}figcaption{font-size:.8rem;color:#555}
.kpi{display:inline-block;margin-right:2rem}.kpi b{font-size:1.6rem;display:block;color:#1f6f43}
.state-succeeded{color:#1f6f43}.state-failed{color:#b00020}.empty{color:#888;font-style:italic}
"""


def render_report(report: Report) -> str:
    run = report.run
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(report.title)}</title>"
             f"<style>{CSS}</style></head><body>",
             f"<h1>{html.escape(report.title)}</h1>",
             f"<p class='sub'>run {html.escape(run.get('id', ''))} · <span class='state-{run.get('state')}'>"
             f"{html.escape(str(run.get('state')))}</span>"
             + (f" · {html.escape(run['error'])}" if run.get("error") else "") + "</p>"]

    kpis = []
    if report.classifier.get("roc_auc") is not None:
        kpis.append(("classifier ROC-AUC", report.classifier["roc_auc"]))
    if report.evaluation:
        for name in ("detector", "teacher"):
            if name in report.evaluation:
                kpis.append((f"{name} CorLoc", report.evaluation[name].get("corloc")))
        if "detector" in report.evaluation:
            kpis.append(("detector AP@0.5", report.evaluation["detector"].get("ap50")))
    if kpis:
        parts.append("<section>" + "".join(f"<div class='kpi'><b>{_fmt(v)}</b>{html.escape(k)}</div>"
                                           for k, v in kpis) + "</section>")

    parts.append("<section><h2>Steps and timing</h2>")
    parts.append(_table(["step", "state", "progress", "seconds", "error"],
                        [[s["step"], s["state"], f"{s['progress']:.0%}", s.get("seconds"), s.get("error") or ""]
                         for s in run.get("steps", [])]))
    parts.append("</section>")

    ds = report.dataset
    parts.append("<section><h2>Dataset</h2>")
    if ds:
        parts.append(_table(["label", "images"], sorted((ds.get("labels") or {}).items())))
        parts.append("<h3>Licences</h3>" + _table(["licence", "images"], sorted((ds.get("licences") or {}).items())))
        if ds.get("dropped"):
            parts.append("<h3>Dropped</h3>" + _table(["reason", "images"], sorted(ds["dropped"].items())))
        if ds.get("attribution"):
            parts.append("<h3>Attribution (sample)</h3>" + _table(
                ["image", "creator", "licence", "source"],
                [[a.get("file"), a.get("creator"), a.get("licence"), a.get("landing_url")]
                 for a in ds["attribution"]]))
    else:
        parts.append("<p class='empty'>no dataset yet</p>")
    parts.append("</section>")

    c = report.classifier
    parts.append("<section><h2>Classifier</h2>")
    if c:
        parts.append(_table(["metric", "value"], [[k, c.get(k)] for k in
                                                  ("roc_auc", "pr_auc", "accuracy", "threshold", "ece", "n_validation")
                                                  if c.get(k) is not None]))
        curves = c.get("curves") or {}
        if curves.get("roc"):
            parts.append(_curve_svg(curves["roc"]["fpr"], curves["roc"]["tpr"], xlabel="false positive rate",
                                    ylabel="true positive rate", title=f"ROC (AUC {_fmt(c.get('roc_auc'))})",
                                    diagonal=True))
        if curves.get("pr"):
            parts.append(_curve_svg(curves["pr"]["recall"], curves["pr"]["precision"], xlabel="recall",
                                    ylabel="precision", title=f"PR (AUC {_fmt(c.get('pr_auc'))})", diagonal=False))
    else:
        parts.append("<p class='empty'>no classifier yet</p>")
    parts.append("</section>")

    parts.append("<section><h2>LIME explanations and boxes</h2><p>Red: evidence for the concept; "
                 "blue: against; yellow: boxes the detector learns from.</p>")
    parts.append(_grid(report.lime_tiles, "no explanations yet") + "</section>")
    parts.append("<section><h2>Detector on held-out images</h2>")
    if report.detector:
        parts.append(_table(["metric", "value"], [[k, v] for k, v in report.detector.items()
                                                  if isinstance(v, (int, float, str))]))
    parts.append(_grid(report.detector_tiles, "no detector yet") + "</section>")

    if report.evaluation:
        parts.append("<section><h2>Against human boxes</h2>")
        rows = [[name, m.get("corloc"), m.get("mean_iou"), m.get("ap50"), m.get("seconds_per_image")]
                for name, m in report.evaluation.items() if isinstance(m, dict)]
        parts.append(_table(["boxes from", "CorLoc", "mean IoU", "AP@0.5", "s / image"], rows) + "</section>")
    for note in report.notes:
        parts.append(f"<p class='sub'>{html.escape(note)}</p>")
    parts.append("</body></html>")
    return "".join(parts)
