"""The run report: one self-contained HTML file (images embedded) a field biologist would open.

``render_report(report)`` is pure: it takes a ``Report`` of plain data and returns HTML.
``labelfree.pipeline.gather`` fills a Report from a run's rows and objects. The page loads
nothing from anywhere: pictures are data URIs, curves are inline SVG, styles are inline.
The only URLs in it are the photos' source pages in the attribution table, as links.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
from PIL import Image


@dataclass
class Tile:
    """One picture in a grid: PNG/JPEG bytes, a caption and the photo's credit (creator · licence)."""

    data: bytes
    caption: str
    credit: str = ""


@dataclass
class Report:
    title: str
    run: dict  # id, state, error, query, created_at, steps [{step, state, progress, seconds, ...}]
    dataset: dict = field(default_factory=dict)  # images, labels, licences, providers, dropped, attribution rows
    classifier: dict = field(default_factory=dict)  # metrics incl. curves {roc: {fpr,tpr}, pr: {recall,precision}}
    explainer: dict = field(default_factory=dict)  # method, images, boxes, boxed_images, skipped
    lime_tiles: list[Tile] = field(default_factory=list)
    detector_tiles: list[Tile] = field(default_factory=list)
    detector: dict = field(default_factory=dict)  # validation {ap50, corloc, miou}, training counts, tiles_from
    evaluation: dict | None = None  # {"detector": {...}, "teacher": {...}, "whole image": {...}, "n_images": n}
    notes: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # sections the run cannot fill yet, with the reason


def _img_tag(data: bytes, alt: str) -> str:
    kind = "png" if data[:8] == b"\x89PNG\r\n\x1a\n" else "jpeg"
    return (f'<img alt="{html.escape(alt)}" loading="eager" '
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


def _curve_svg(xs, ys, *, xlabel: str, ylabel: str, title: str, diagonal: bool, point=None) -> str:
    """A line plot on the unit square as inline SVG (no plotting library in the report path)."""
    w, h, left, right, top, bottom = 340, 300, 48, 14, 34, 44
    pw, ph = w - left - right, h - top - bottom

    def px(x, y):
        return f"{left + float(x) * pw:.1f},{top + (1 - float(y)) * ph:.1f}"

    grid = "".join(
        f'<line x1="{left + t * pw:.1f}" y1="{top}" x2="{left + t * pw:.1f}" y2="{top + ph}" class="gl"/>'
        f'<line x1="{left}" y1="{top + t * ph:.1f}" x2="{left + pw}" y2="{top + t * ph:.1f}" class="gl"/>'
        f'<text x="{left + t * pw:.1f}" y="{top + ph + 16}" text-anchor="middle" class="tick">{t:g}</text>'
        f'<text x="{left - 6}" y="{top + (1 - t) * ph + 4:.1f}" text-anchor="end" class="tick">{t:g}</text>'
        for t in (0, 0.25, 0.5, 0.75, 1))
    diag = f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top}" class="chance"/>' if diagonal else ""
    dot = ""
    if point is not None:
        cx, cy = px(*point).split(",")
        dot = (f'<circle cx="{cx}" cy="{cy}" r="5" class="op"><title>the classifier\'s threshold</title></circle>')
    pts = " ".join(px(x, y) for x, y in zip(xs, ys))
    return (f'<svg class="curve" viewBox="0 0 {w} {h}" role="img" aria-label="{html.escape(title)}">'
            f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" class="plot"/>{grid}{diag}'
            f'<polyline points="{pts}" class="line"/>{dot}'
            f'<text x="{left + pw / 2}" y="{h - 8}" text-anchor="middle">{html.escape(xlabel)}</text>'
            f'<text x="14" y="{top + ph / 2}" transform="rotate(-90 14 {top + ph / 2})" '
            f'text-anchor="middle">{html.escape(ylabel)}</text>'
            f'<text x="{left + pw / 2}" y="22" text-anchor="middle" class="ttl">{html.escape(title)}</text></svg>')


def _fmt(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}"
    return "" if value is None else str(value)


def _cell(value) -> str:
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    return f"<td class='num'>{html.escape(_fmt(value))}</td>" if numeric else f"<td>{html.escape(_fmt(value))}</td>"


def _table(header: list[str], rows: list[list], css: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(c if isinstance(c, _Raw) else _cell(c) for c in row) + "</tr>" for row in rows)
    return f"<table class='{css}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


class _Raw(str):
    """A table cell that is already HTML (a link)."""


def _link(url: str | None, text: str) -> _Raw:
    if url and url.startswith(("http://", "https://")):
        return _Raw(f"<td><a href=\"{html.escape(url, quote=True)}\" rel=\"noopener noreferrer\">"
                    f"{html.escape(text)}</a></td>")
    return _Raw(f"<td>{html.escape(text)}</td>")


def _grid(tiles: list[Tile], empty: str) -> str:
    if not tiles:
        return f"<p class='empty'>{html.escape(empty)}</p>"
    cells = "".join(f"<figure>{_img_tag(t.data, t.caption)}<figcaption>{html.escape(t.caption)}"
                    + (f"<small>{html.escape(t.credit)}</small>" if t.credit else "") + "</figcaption></figure>"
                    for t in tiles)
    return f"<div class='grid'>{cells}</div>"


PROVIDERS = {"openverse": "Openverse", "inaturalist": "iNaturalist", "wikimedia": "Wikimedia Commons",
             "dir": "a local folder"}


def _duration(seconds: float | None) -> str:
    """12.3 s, 4 min 05 s, 2 h 03 min."""
    if seconds is None:
        return ""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def _counted(n: int, one: str, many: str | None = None) -> str:
    return f"{n:,} {one if n == 1 else (many or one + 's')}"


def plain_summary(report: Report) -> str:
    """The report in a few plain sentences (HTML, escaped)."""
    e = html.escape
    ds, c, x, d, ev = report.dataset, report.classifier, report.explainer, report.detector, report.evaluation
    parts = []
    if ds:
        labels = ds.get("labels") or {}
        parts.append(f"<b>{_counted(ds.get('images', 0), 'photo')}</b> collected for "
                     f"“{e(report.run.get('query') or '')}” from "
                     f"{e(PROVIDERS.get(ds.get('provider'), str(ds.get('provider') or 'an image search')))} "
                     f"({labels.get('positive', 0):,} showing it, {labels.get('negative', 0):,} not), "
                     f"under {_counted(len(ds.get('licences') or {}), 'licence')}.")
    if c.get("roc_auc") is not None:
        parts.append(f"The classifier tells them apart with ROC-AUC <b>{c['roc_auc']:.3f}</b> on "
                     f"{_counted(c.get('n_validation') or 0, 'held-out photo')}.")
    if x:
        boxes = _counted(x.get("boxes") or 0, "box", "boxes")
        parts.append(f"The explainer ({e(str(x.get('method')))}) drew <b>{boxes}"
                     f"</b> on {_counted(x.get('boxed_images') or 0, 'photo')}: these are the detector's only labels.")
    if ev and isinstance(ev.get("detector"), dict):
        det = ev["detector"]
        names = {"teacher": "the teacher's boxes", "whole image": "a box around the whole photo"}
        others = [f"{label} {ev[name]['ap50']:.2f}" for name, label in names.items()
                  if isinstance(ev.get(name), dict) and ev[name].get("ap50") is not None]
        parts.append(f"Against {_counted(ev.get('n_images') or 0, 'photo')} boxed by people, the detector reaches "
                     f"<b>AP@0.5 {det['ap50']:.2f}</b> and CorLoc {det['corloc']:.2f}"
                     + (f" ({e('; '.join(others))})." if others else "."))
    elif (d.get("validation") or {}).get("ap50") is not None:
        parts.append(f"The detector agrees with the explainer's boxes on photos it did not train on at "
                     f"<b>AP@0.5 {d['validation']['ap50']:.2f}</b>; no human boxes were given to measure it "
                     f"against people (<code>--gt</code>).")
    if d.get("deployed"):
        parts.append("It is deployed: the inference service answers with it.")
    return " ".join(parts) or "Nothing to report yet."


CSS = """
:root{--ink:#1d2521;--muted:#5d6b64;--line:#dde3df;--accent:#1f6f43;--soft:#f2f6f3}
*{box-sizing:border-box}
body{font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:var(--ink);background:#fff}
main{max-width:1180px;margin:0 auto;padding:1.5rem 1.25rem 3rem}
header{border-bottom:3px solid var(--accent);padding-bottom:.8rem;margin-bottom:1rem}
h1{font-size:1.9rem;margin:0 0 .2rem}h2{font-size:1.35rem;margin:0 0 .3rem;color:var(--accent)}
h3{font-size:1rem;margin:1rem 0 .3rem}
.sub{color:var(--muted);margin:0}.lead{font-size:1.1rem;max-width:60rem}
.why{color:var(--muted);margin:.1rem 0 .8rem;max-width:60rem}
section{margin:2.2rem 0;padding-top:.4rem;border-top:1px solid var(--line)}
.missing{background:#fff6df;border:1px solid #f0d48a;border-radius:6px;padding:.6rem 1rem;margin:1rem 0}
.missing ul{margin:.3rem 0 0 1.2rem;padding:0}
.kpis{display:flex;flex-wrap:wrap;gap:.8rem;margin:1rem 0}
.kpi{background:var(--soft);border-radius:8px;padding:.6rem 1rem;min-width:9.5rem}
.kpi b{font-size:1.6rem;display:block;color:var(--accent);line-height:1.2}.kpi span{color:var(--muted);font-size:.85rem}
.tables{display:flex;flex-wrap:wrap;gap:0 2rem;align-items:flex-start}
table{border-collapse:collapse;margin:.4rem 0;font-size:.92rem}
td,th{border-bottom:1px solid var(--line);padding:.3rem .7rem;text-align:left;vertical-align:top}
th{background:var(--soft);font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
tbody tr:nth-child(even){background:#fafcfb}
.wide{width:100%}.attr{max-height:28rem;overflow:auto;display:block}
details summary{cursor:pointer;color:var(--accent);font-weight:600;margin:.6rem 0}
.curves{display:flex;flex-wrap:wrap;gap:1.5rem}
svg.curve{width:100%;max-width:340px;height:auto;font-size:12px;fill:var(--ink)}
svg .plot{fill:#fbfcfb;stroke:#9aa8a0}svg .gl{stroke:#e4e9e6}svg .tick{fill:var(--muted);font-size:10px}
svg .chance{stroke:#b9c2bd;stroke-dasharray:4}svg .line{fill:none;stroke:var(--accent);stroke-width:2.5}
svg .op{fill:#d9480f}svg .ttl{font-weight:600;font-size:13px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(230px,1fr));gap:1rem}
figure{margin:0;background:var(--soft);border-radius:6px;overflow:hidden}
figure img{display:block;width:100%;height:auto;aspect-ratio:4/3;object-fit:contain;background:#e4e9e6}
figcaption{font-size:.85rem;padding:.35rem .55rem;overflow-wrap:anywhere}
figcaption small{display:block;color:var(--muted);font-size:.75rem}
.legend span{display:inline-block;width:.9em;height:.9em;border-radius:2px;margin:0 .3em 0 .8em;vertical-align:-1px;
border:1px solid #7b8a82}.legend span:first-child{margin-left:0}
.state-succeeded{color:var(--accent)}.state-failed{color:#b00020}.state-running,.state-queued{color:#b36b00}
.empty{color:#888;font-style:italic}footer{color:var(--muted);font-size:.8rem;margin-top:3rem}
code{background:var(--soft);padding:0 .25em;border-radius:3px}
@media (max-width:600px){h1{font-size:1.5rem}.kpi{min-width:45%}}
"""


def _legend(*items: tuple[str, str]) -> str:
    return "<p class='legend'>" + "".join(f"<span style='background:{c}'></span>{html.escape(t)}"
                                          for c, t in items) + "</p>"


def _dataset_section(ds: dict) -> str:
    out = ["<section id='dataset'><h2>The photos</h2>"]
    if not ds:
        return out[0] + "<p class='empty'>No dataset yet.</p></section>"
    out.append("<p class='why'>Found by image search; the photos that show the concept are the positives, "
               "photos of other things the negatives. Nobody labelled them. Every photo keeps its licence "
               "and creator, listed below.</p><div class='tables'>")
    labels = sorted((ds.get("labels") or {}).items())
    out.append("<div><h3>Labels</h3>" + _table(["label", "photos"], labels) + "</div>")
    licences = sorted((ds.get("licences") or {}).items(), key=lambda kv: -kv[1])
    out.append("<div><h3>Licences</h3>" + _table(["licence", "photos"], licences) + "</div>")
    if len(ds.get("providers") or {}) > 1:
        out.append("<div><h3>Sources</h3>" + _table(["provider", "photos"], sorted(ds["providers"].items())) + "</div>")
    if ds.get("dropped"):
        out.append("<div><h3>Left out</h3>" + _table(["reason", "photos"], sorted(ds["dropped"].items())) + "</div>")
    out.append("</div>")
    if (ds.get("hard_negatives") or ds.get("random_words")) and ds.get("provider") != "dir":  # dir: folder aliases
        words = list(ds.get("hard_negatives") or []) + list(ds.get("random_words") or [])
        out.append(f"<p class='why'>Negatives searched for: {html.escape(', '.join(words[:30]))}"
                   f"{' …' if len(words) > 30 else ''}.</p>")
    attribution = ds.get("attribution") or []
    if attribution:
        rows = [[a.get("file") or "", a.get("label"), a.get("creator") or "unknown",
                 _link(a.get("licence_url"), a.get("licence") or "unknown"),
                 _link(a.get("landing_url"), "source" if a.get("landing_url") else "")] for a in attribution]
        out.append(f"<details><summary>Attribution of all {len(attribution):,} photos</summary>"
                   + _table(["photo", "label", "creator", "licence", "source"], rows, "attr") + "</details>")
    return "".join(out) + "</section>"


def _classifier_section(c: dict) -> str:
    out = ["<section id='classifier'><h2>Telling it apart: the classifier</h2>"]
    if not c:
        return out[0] + "<p class='empty'>No classifier yet.</p></section>"
    out.append("<p class='why'>A logistic regression on a pretrained network's features, scored on photos held "
               "out of its training. ROC-AUC is the chance that a random positive scores above a random negative "
               "(1.0 is perfect, 0.5 is a coin toss); the dot marks the threshold it uses.</p><div class='curves'>")
    names = {"roc_auc": "ROC-AUC", "pr_auc": "PR-AUC (average precision)", "accuracy": "accuracy at threshold",
             "balanced_accuracy": "balanced accuracy", "threshold": "threshold (P positive)",
             "ece": "calibration error (ECE)", "n_validation": "held-out photos"}
    out.append("<div>" + _table(["metric", "value"], [[label, c.get(k)] for k, label in names.items()
                                                      if c.get(k) is not None]) + "</div>")
    curves, op = c.get("curves") or {}, c.get("operating_point")
    if curves.get("roc"):
        out.append(_curve_svg(curves["roc"]["fpr"], curves["roc"]["tpr"], xlabel="false positive rate",
                              ylabel="true positive rate", title=f"ROC curve (AUC {_fmt(c.get('roc_auc'))})",
                              diagonal=True, point=(op["fpr"], op["tpr"]) if op else None))
    if curves.get("pr"):
        out.append(_curve_svg(curves["pr"]["recall"], curves["pr"]["precision"], xlabel="recall",
                              ylabel="precision", title=f"Precision-recall (AP {_fmt(c.get('pr_auc'))})",
                              diagonal=False))
    return "".join(out) + "</div></section>"


METHOD_NAMES = {"foreground": "its foreground labeller, fitted on this dataset's photos",
                "cam": "a class activation map", "lime": "LIME", "lime+cam": "LIME with a class activation map"}


def _explainer_section(report: Report) -> str:
    x = report.explainer
    method = METHOD_NAMES.get(x.get("method") or "", x.get("method") or "")
    out = [f"<section id='explainer'><h2>Where the classifier looks: the teacher's boxes</h2>"
           f"<p class='why'>The explainer{f' ({html.escape(method)})' if method else ''} asks the classifier which "
           "parts of each photo made it say yes, and boxes those parts. These boxes are what the detector learns "
           "from, so their mistakes become its mistakes.</p>"]
    if x:
        out.append(f"<p class='sub'>{_counted(x.get('boxes') or 0, 'box', 'boxes')} on "
                   f"{_counted(x.get('boxed_images') or 0, 'photo')} of {x.get('images') or 0:,} explained"
                   + (f"; {x['skipped']:,} unreadable" if x.get("skipped") else "") + ".</p>")
        out.append(_legend(("#e03131", "evidence for"), ("#1c4fd8", "evidence against"), ("#ffd600", "box"),
                           ("#00c8ff", "candidate (ranked below half the top box)")))
    return "".join(out) + _grid(report.lime_tiles, "No explanations yet.") + "</section>"


def _detector_section(report: Report) -> str:
    d = report.detector
    out = ["<section id='detector'><h2>The detector on photos it has not seen</h2>"]
    if not d and not report.detector_tiles:
        return out[0] + "<p class='empty'>No detector yet.</p></section>"
    out.append("<p class='why'>A small object detector trained on the teacher's boxes; it is what the inference "
               "service runs on camera-trap photos. "
               + html.escape(f"Pictures: {d['tiles_from']}." if d.get("tiles_from") else "") + "</p>")
    v, t = d.get("validation") or {}, d.get("training") or {}
    rows = [["agreement with held-out teacher boxes, AP@0.5", v.get("ap50")],
            ["… CorLoc (top box right)", v.get("corloc")], ["… mean IoU of the top box", v.get("miou")],
            ["photos trained on / held out", f"{t['n_train']:,} / {t.get('n_val', 0):,}" if "n_train" in t else None],
            ["teacher boxes", t.get("n_boxes_teacher")], ["self-training rounds", t.get("self_train_rounds")],
            ["negatives the first round boxed at 0.5 (drawn more often after)",
             f"{t['negatives_boxed_first_round']:.1%}" if "negatives_boxed_first_round" in t else None],
            ["input size (pixels)", d.get("input_size")], ["deployed", d.get("deployed")]]
    out.append(_table(["measure", "value"], [r for r in rows if r[1] is not None]))
    out.append(_legend(*((("#ffffff", "a person's box"),) if report.evaluation else ()), ("#00e676", "detector")))
    return "".join(out) + _grid(report.detector_tiles, "No pictures of the detector.") + "</section>"


def _evaluation_section(ev: dict) -> str:
    out = ["<section id='evaluation'><h2>Against human boxes</h2>"
           f"<p class='why'>{_counted(ev.get('n_images') or 0, 'photo')} boxed by people"
           + (f" ({html.escape(str(ev['source']))})" if ev.get("source") else "")
           + ". CorLoc: share of photos whose top box overlaps a person's box by at least half (IoU ≥ 0.5). "
             "AP@0.5: precision averaged over recall, every box counted. The whole-image box is the baseline "
             "to beat: many photos are close-ups.</p>"]
    rows = [[name, m.get("corloc"), m.get("mean_iou"), m.get("ap50"), m.get("seconds_per_image")]
            for name, m in ev.items() if isinstance(m, dict)]
    out.append(_table(["boxes from", "CorLoc", "mean IoU", "AP@0.5", "seconds / photo"], rows))
    return "".join(out) + "</section>"


def _steps_section(run: dict) -> str:
    num = "<td class='num'>{}</td>".format
    rows = [[s["step"], _Raw(f"<td class='state-{html.escape(s['state'])}'>{html.escape(s['state'])}</td>"),
             _Raw(num(f"{s.get('progress') or 0:.0%}")), s.get("started_at"),
             _Raw(num(_duration(s.get("queued_seconds")))), _Raw(num(_duration(s.get("seconds")))),
             s.get("attempts"), s.get("error") or ""] for s in run.get("steps", [])]
    total = sum(s.get("seconds") or 0 for s in run.get("steps", []))
    return ("<section id='steps'><h2>Steps and timing</h2><p class='why'>Each step is a job run by a worker; "
            f"queued is the wait for one. Running time of all steps: {_duration(total)}.</p>"
            + _table(["step", "state", "progress", "started (UTC)", "queued", "running", "attempts", "error"],
                     rows) + "</section>")


def render_report(report: Report) -> str:
    run = report.run
    state = html.escape(str(run.get("state")))
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
             f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
             f"<title>{html.escape(report.title)}</title><style>{CSS}</style></head><body><main><header>",
             f"<h1>{html.escape(report.title)}</h1>",
             f"<p class='sub'>run {html.escape(str(run.get('id', '')))} · <span class='state-{state}'>{state}</span>"
             + (f" · started {html.escape(run['created_at'])}" if run.get("created_at") else "")
             + (f" · {html.escape(run['error'])}" if run.get("error") else "") + "</p></header>"]
    if report.missing:
        parts.append("<div class='missing'><b>Not everything is here yet.</b> Missing sections:<ul>"
                     + "".join(f"<li>{html.escape(m)}</li>" for m in report.missing) + "</ul></div>")
    parts.append(f"<p class='lead'>{plain_summary(report)}</p>")

    kpis = []
    if report.dataset:
        kpis.append(("photos", f"{report.dataset.get('images', 0):,}"))
    if report.explainer:
        kpis.append(("teacher boxes", f"{report.explainer.get('boxes') or 0:,}"))
    if report.classifier.get("roc_auc") is not None:
        kpis.append(("classifier ROC-AUC", _fmt(report.classifier["roc_auc"])))
    ev = report.evaluation or {}
    if isinstance(ev.get("detector"), dict):
        kpis += [("detector AP@0.5 (human boxes)", _fmt(ev["detector"].get("ap50"))),
                 ("detector CorLoc", _fmt(ev["detector"].get("corloc")))]
    if isinstance(ev.get("teacher"), dict):
        kpis.append(("teacher CorLoc", _fmt(ev["teacher"].get("corloc"))))
    elif (report.detector.get("validation") or {}).get("ap50") is not None:
        kpis.append(("detector AP@0.5 (teacher boxes)", _fmt(report.detector["validation"]["ap50"])))
    if kpis:
        parts.append("<div class='kpis'>" + "".join(f"<div class='kpi'><b>{html.escape(v)}</b>"
                                                    f"<span>{html.escape(k)}</span></div>" for k, v in kpis) + "</div>")
    parts += [_dataset_section(report.dataset), _classifier_section(report.classifier), _explainer_section(report),
              _detector_section(report)]
    if report.evaluation:
        parts.append(_evaluation_section(report.evaluation))
    parts.append(_steps_section(run))
    if report.notes:
        parts.append("<section id='notes'><h2>Notes</h2><ul>"
                     + "".join(f"<li>{html.escape(n)}</li>" for n in report.notes) + "</ul></section>")
    parts.append(f"<footer>Made by <code>labelfree report</code> on "
                 f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. One file: it opens offline.</footer>")
    parts.append("</main></body></html>")
    return "".join(parts)
