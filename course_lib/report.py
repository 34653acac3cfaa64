"""The HTML report of a course run: ``<out>/index.html`` and each executed notebook rendered to HTML, offline.

The report knows no lesson: per notebook it shows the summary (the notebook's first paragraph), the status of
its last run (``run.json``, ``last_failure.json``), its figures (``figures/index.json``), its scalar metrics,
and the headline claims the notebook declared in ``metrics.json`` (:class:`course_lib.runtime.Headline`):
claim, the paper's value, this run's value and interval, whether the notebook's gates passed.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from course_lib import runtime

MATHJAX_CONFIG = "TeX-AMS-MML_HTMLorMML-full,Safe"
_MATHJAX_FONTS = '"HTML-CSS": {availableFonts: ["STIX", "TeX"], preferredFont: "STIX", webFont: null, imageFont: null}, MathMenu: {showFontMenu: false},'


def default_notebooks() -> list[Path]:
    """``notebooks/NN_*.ipynb`` of the checkout, in order."""
    return sorted((runtime.project_root() / "notebooks").glob("[0-9][0-9]_*.ipynb"))


# --------------------------------------------------------------------------- offline HTML

_EXTERNAL = re.compile(
    r"""(?:<script[^>]*\bsrc\s*=\s*["']?https?://|<link[^>]*\bhref\s*=\s*["']?https?://|<img[^>]*\bsrc\s*=\s*["']?https?://"""
    r"""|\bimport\s*(?:[\w{}\s,*]+from\s*)?["']https?://|url\(\s*["']?https?://|@import\s+["']https?://)""",
    re.IGNORECASE,
)


def external_references(page: str) -> list[str]:
    """Every place in ``page`` that would make a browser fetch something from the network."""
    return [page[m.start(): m.start() + 120] for m in _EXTERNAL.finditer(page)]


def _static_mathjax(out: Path) -> Path | None:
    """Copy MathJax (from the ``jupyter-server-mathjax`` package in the venv) to ``out/_static/mathjax``."""
    import importlib.util

    spec = importlib.util.find_spec("jupyter_server_mathjax")
    if spec is None or not spec.submodule_search_locations:
        return None
    src = Path(list(spec.submodule_search_locations)[0]) / "static"
    dst = out / "_static" / "mathjax"
    if not (dst / "MathJax.js").exists():
        tmp = Path(tempfile.mkdtemp(dir=out, prefix=".mathjax."))
        try:
            shutil.copytree(src, tmp / "m")
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(dst, ignore_errors=True)
            (tmp / "m").rename(dst)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dst / "MathJax.js"


def render_html(executed: Path, out: Path) -> Path | None:
    """Render ``executed`` to HTML beside it, loading nothing from the network.

    MathJax comes from ``out/_static`` (copied from the venv); require.js and mermaid, which a notebook
    without live widgets or diagrams never uses, are left out.
    """
    try:
        import nbformat
        from nbconvert import HTMLExporter

        mathjax = _static_mathjax(out)
        exporter = HTMLExporter()
        nb = nbformat.read(executed, as_version=4)
        nb.metadata.pop("widgets", None)  # headless runs have no live widget state to restore
        body, _ = exporter.from_notebook_node(nb)
        body = re.sub(r'<script[^>]*src="https?://[^"]*require[^"]*"[^>]*>\s*</script>', "", body)
        body = re.sub(r"<script type=\"module\">(?:(?!</script>).)*?https?://[^<]*mermaid(?:(?!</script>).)*</script>",
                      "", body, flags=re.DOTALL)
        if mathjax is not None:
            rel = os.path.relpath(mathjax, executed.parent).replace(os.sep, "/")
            body = re.sub(r'src="https?://[^"]*mathjax[^"]*"', f'src="{rel}?config={MATHJAX_CONFIG}"', body)
            # the packaged MathJax ships STIX-Web fonts only (no TeX web fonts): ask for those
            body = body.replace("messageStyle: 'none',", "messageStyle: 'none',\n                " + _MATHJAX_FONTS, 1)
        path = executed.with_suffix(".html")
        runtime.atomic_write_text(path, body)
        return path
    except Exception:  # noqa: BLE001 - the .ipynb is still linked from the report
        return None


# --------------------------------------------------------------------------- report

_CSS = """
body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{margin-bottom:0}.sub{color:#666;margin-top:.2em}nav a{margin-right:1em}
section{border-top:2px solid #ddd;margin-top:2.5em;padding-top:1em}
.ok{color:#17803d}.fail{color:#b3261e}pre{background:#f6f6f6;padding:.8em;overflow:auto;font-size:.85em}
.banner{background:#fdecea;border:1px solid #b3261e;padding:.6em 1em;margin:.6em 0}
table{border-collapse:collapse;font-size:.9em;margin:.5em 0}td,th{border:1px solid #ddd;padding:.3em .6em;text-align:left;vertical-align:top}
figure{margin:1.2em 0}figure img{max-width:100%;border:1px solid #eee;cursor:zoom-in}
figcaption{font-size:.9em;color:#444;margin-top:.3em}.summary{max-width:900px}
details summary{cursor:pointer;color:#555}
"""

def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _metric_rows(metrics: dict) -> tuple[str, str]:
    """Scalar metrics as a table (rounded), and the structured ones in a collapsed block."""
    rows, rest = [], {}
    for key, value in metrics.items():
        if isinstance(value, (dict, list)):
            rest[key] = value
        else:
            rows.append(f"<tr><th>{html.escape(str(key))}</th><td>{html.escape(_fmt(value))}</td></tr>")
    table = "<table>" + "".join(rows) + "</table>" if rows else ""
    details = ""
    if rest:
        text = json.dumps(rest, indent=1)
        if len(text) > 20_000:
            text = text[:20_000] + "\n..."
        details = f"<details><summary>structured metrics ({len(rest)})</summary><pre>{html.escape(text)}</pre></details>"
    return table, details


def notebook_summary(nb_path: Path) -> str:
    """The first paragraph after the title in the notebook's first markdown cell (plain text)."""
    try:
        cells = json.loads(nb_path.read_text())["cells"]
    except (OSError, ValueError, KeyError):
        return ""
    for c in cells:
        if c.get("cell_type") != "markdown":
            continue
        text = "".join(c.get("source", []))
        paras = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip() and not p.strip().startswith("#")]
        if paras:
            plain = re.sub(r"[*_`]", "", " ".join(paras[0].split()))
            return plain
    return ""


def _figures(nb_dir: Path) -> list[dict]:
    index = nb_dir / "figures" / "index.json"
    try:
        entries = [e for e in json.loads(index.read_text()) if (nb_dir / "figures" / e["file"]).exists()]
    except (OSError, ValueError, KeyError, TypeError):
        entries = []
    listed = {e["file"] for e in entries}
    for f in sorted((nb_dir / "figures").glob("*.png")):
        if f.name not in listed:
            entries.append({"name": f.stem, "file": f.name, "caption": f.stem.replace("_", " ")})
    return entries


def _headline_rows(stem: str, metrics: dict) -> list[str]:
    """Table rows of the headline claims ``metrics["headline"]`` declares: a number only where the notebook's
    gates passed, with its interval; otherwise why it is not shown."""
    rows = []
    for h in metrics.get("headline") or []:
        if not isinstance(h, dict):
            continue
        if h.get("gates_passed", True) and h.get("value") is not None:
            ours = html.escape(str(h["value"]))
            if h.get("interval"):
                ours += f"<br><small>{html.escape(str(h['interval']))}</small>"
        elif h.get("gates_passed", True):
            ours = "not in this run"
        else:
            ours = "<span class='fail'>not shown: failed this notebook's gates</span>"
        note = f"<br><small>{html.escape(str(h['note']))}</small>" if h.get("note") else ""
        rows.append(f"<tr><td>{html.escape(stem[:2])}</td><td>{html.escape(str(h.get('claim', '')))}{note}</td>"
                    f"<td>{html.escape(str(h.get('paper', '')))}</td><td>{ours}</td></tr>")
    return rows


_CLAIMS_HEAD = "<table><tr><th>nb</th><th>claim</th><th>paper</th><th>this run</th></tr>"


def build_report(out: Path) -> Path:
    """Write ``out/index.html``: per notebook in order its summary, status, figures, metrics; paper vs ours."""
    sources = {nb.stem: nb for nb in default_notebooks()}
    dirs = sorted(p for p in out.iterdir() if p.is_dir() and (p / "run.json").exists() and not p.name.startswith((".", "_")))
    sections, claims, nav = [], [], []
    for nb_dir in dirs:
        stem = nb_dir.name
        run = json.loads((nb_dir / "run.json").read_text())
        metrics_path = nb_dir / "metrics.json"
        try:
            metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
        except ValueError:
            metrics = {}
        failure = None
        if (nb_dir / "last_failure.json").exists():
            try:
                failure = json.loads((nb_dir / "last_failure.json").read_text())
            except ValueError:
                failure = {"error": "unreadable last_failure.json"}
        good = bool(run.get("ok")) and (failure is None or run.get("run_id") != failure.get("run_id"))
        status = '<span class="ok">passed</span>' if run.get("ok") else '<span class="fail">FAILED</span>'
        banner = ""
        if failure:
            where = f"cell {failure.get('cell_index')}" if failure.get("cell_index") is not None else "a cell"
            first = (failure.get("error") or "").strip().splitlines()[-1:] or [""]
            shown = "the outputs below are from the last good run" if good else "no good run yet"
            banner = (f"<div class='banner'><b>last run failed at {html.escape(where)}</b> "
                      f"({html.escape(str(failure.get('finished', '')))}): {html.escape(first[0])} — {shown}."
                      f"<details><summary>details</summary><pre>{html.escape(failure.get('error') or '')}</pre></details></div>")
        links = [f'<a href="{stem}/{stem}.ipynb">executed notebook</a>']
        if (nb_dir / f"{stem}.html").exists():
            links.insert(0, f'<a href="{stem}/{stem}.html">read it (HTML)</a>')
        figs = "".join(
            f'<figure><a href="{stem}/figures/{e["file"]}" target="_blank"><img src="{stem}/figures/{e["file"]}" '
            f'alt="{html.escape(e["caption"])}"></a><figcaption>{html.escape(e["caption"])}</figcaption></figure>'
            for e in _figures(nb_dir))
        table, details = _metric_rows(metrics)
        rows = _headline_rows(stem, metrics)
        claims += rows
        headline = _CLAIMS_HEAD + "".join(rows) + "</table>" if rows else "<p>no headline claims declared</p>"
        summary = notebook_summary(sources[stem]) if stem in sources else ""
        nav.append(f'<a href="#{stem}">{html.escape(stem)}</a>')
        sections.append(
            f"<section id='{stem}'><h2>{html.escape(stem)} — {status}</h2>{banner}"
            f"<p class='summary'>{html.escape(summary)}</p>"
            f"<p>profile <b>{html.escape(str(run.get('profile')))}</b>, wall time <b>{run.get('wall_time_s')} s</b>"
            f" · {' · '.join(links)}</p>"
            f"<h3>Figures</h3>{figs or '<p>no figures</p>'}"
            f"<h3>Headline claims</h3>{headline}"
            f"<details><summary>every value in metrics.json, as written (not gated)</summary>"
            f"{table or '<p>no metrics.json</p>'}{details}</details></section>")
    profiles = sorted({json.loads((d / "run.json").read_text()).get("profile", "?") for d in dirs})
    claims_html = (f"<h2>Paper vs this run</h2><p>profile: {html.escape(', '.join(profiles))}; a number here is "
                   "a headline claim the notebook declared in its metrics.json (only numbers that passed the notebook's own gates, "
                   "with their intervals), so it is exactly what the executed notebook shows.</p>" + _CLAIMS_HEAD
                   + "".join(claims) + "</table>") if claims else ""
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>Mechanistic interpretability course: "
        f"results</title><style>{_CSS}</style></head><body><h1>Course results</h1>"
        f"<p class='sub'>generated {time.strftime('%Y-%m-%d %H:%M:%S')} · {' '.join(nav)}</p>"
        f"{claims_html}{''.join(sections)}</body></html>"
    )
    path = out / "index.html"
    runtime.atomic_write_text(path, page)
    return path
