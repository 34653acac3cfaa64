"""Execute the course notebooks with papermill and gather their results into an HTML report.

    python -m course_lib.cli run [NOTEBOOK ...] --profile workshop --out outputs
    python -m course_lib.cli report --out outputs

``run`` executes each notebook (default: every ``notebooks/*.ipynb``, in name order) into
``<out>/<stem>/<stem>.ipynb`` with ``PROFILE``, ``SEED``, ``DEVICE`` and ``OUT_DIR=<out>/<stem>``
injected, renders it to HTML beside it, records status and wall time in ``<out>/<stem>/run.json``
and rebuilds ``<out>/index.html``. A failing notebook does not stop the others; the command prints
the failing cell and its error, and exits 1.
"""

from __future__ import annotations

import argparse
import html
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from course_lib import runtime

KERNEL = "python3"


@dataclass(frozen=True)
class NotebookResult:
    stem: str
    ok: bool
    wall_time_s: float
    error: str | None = None  # the failing cell and its error, for the console and the report


def default_notebooks() -> list[Path]:
    return sorted((runtime.project_root() / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _describe_failure(exc: BaseException) -> str:
    from papermill.exceptions import PapermillExecutionError

    if isinstance(exc, PapermillExecutionError):
        source = "\n".join("    " + line for line in str(exc.source).splitlines()[:25])
        return (
            f"cell {exc.cell_index} (execution count {exc.exec_count}) failed:\n{source}\n"
            f"{exc.ename}: {exc.evalue}"
        )
    return f"{type(exc).__name__}: {exc}"


def execute_notebook(
    notebook: Path, out: Path, profile: str, seed: int = 0, device: str = "auto", kernel: str = KERNEL,
    extra_parameters: dict | None = None, progress: bool = True,
) -> NotebookResult:
    """Run one notebook with papermill into ``out/<stem>/``; never raises for a failing cell."""
    import papermill

    stem = notebook.stem
    nb_out = (out / stem).resolve()
    nb_out.mkdir(parents=True, exist_ok=True)
    executed = nb_out / f"{stem}.ipynb"
    params = {"PROFILE": profile, "SEED": seed, "DEVICE": device, "OUT_DIR": str(nb_out)}
    params.update(extra_parameters or {})
    start = time.perf_counter()
    error = None
    try:
        papermill.execute_notebook(
            str(notebook), str(executed), parameters=params, kernel_name=kernel,
            cwd=str(notebook.parent), progress_bar=progress, start_timeout=120,
        )
    except Exception as exc:  # noqa: BLE001 - reported, and the run goes on
        error = _describe_failure(exc)
    wall = round(time.perf_counter() - start, 1)
    if executed.exists():
        _render_html(executed)
    result = NotebookResult(stem=stem, ok=error is None, wall_time_s=wall, error=error)
    runtime.atomic_write_text(nb_out / "run.json", json.dumps(result.__dict__ | {"profile": profile}, indent=2))
    return result


def _render_html(executed: Path) -> None:
    try:
        import nbformat
        from nbconvert import HTMLExporter

        body, _ = HTMLExporter().from_notebook_node(nbformat.read(executed, as_version=4))
        runtime.atomic_write_text(executed.with_suffix(".html"), body)
    except Exception:  # noqa: BLE001 - the .ipynb is still linked from the report
        pass


# --------------------------------------------------------------------------- report

_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{margin-bottom:0}.sub{color:#666;margin-top:.2em}
section{border-top:2px solid #ddd;margin-top:2em;padding-top:1em}
.ok{color:#17803d}.fail{color:#b3261e}pre{background:#f6f6f6;padding:.8em;overflow:auto}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left}
figure{display:inline-block;margin:.5em;vertical-align:top}figure img{max-width:520px;border:1px solid #eee}
figcaption{font-size:.85em;color:#555;text-align:center}
"""


def _metric_rows(metrics: dict) -> str:
    rows = []
    for key, value in metrics.items():
        text = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
        if len(text) > 300:
            text = text[:300] + " ..."
        rows.append(f"<tr><th>{html.escape(str(key))}</th><td>{html.escape(text)}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def build_report(out: Path) -> Path:
    """Write ``out/index.html``: every notebook's status, profile, wall time, metrics and figures."""
    sections = []
    for nb_dir in sorted(p for p in out.iterdir() if p.is_dir() and (p / "run.json").exists()):
        run = json.loads((nb_dir / "run.json").read_text())
        metrics_path = nb_dir / "metrics.json"
        metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
        status = '<span class="ok">passed</span>' if run["ok"] else '<span class="fail">FAILED</span>'
        links = [f'<a href="{nb_dir.name}/{nb_dir.name}.ipynb">executed notebook</a>']
        if (nb_dir / f"{nb_dir.name}.html").exists():
            links.insert(0, f'<a href="{nb_dir.name}/{nb_dir.name}.html">read it (HTML)</a>')
        figs = "".join(
            f'<figure><a href="{nb_dir.name}/figures/{f.name}"><img src="{nb_dir.name}/figures/{f.name}" '
            f'alt="{html.escape(f.stem)}"></a><figcaption>{html.escape(f.stem)}</figcaption></figure>'
            for f in sorted((nb_dir / "figures").glob("*.png"))
        )
        error = f"<pre>{html.escape(run['error'])}</pre>" if run.get("error") else ""
        sections.append(
            f"<section><h2>{html.escape(nb_dir.name)} — {status}</h2>"
            f"<p>profile <b>{html.escape(str(run.get('profile')))}</b>, wall time "
            f"<b>{run['wall_time_s']} s</b> · {' · '.join(links)}</p>{error}"
            f"<h3>Metrics</h3>{_metric_rows(metrics) if metrics else '<p>no metrics.json</p>'}"
            f"<h3>Figures</h3>{figs or '<p>no figures</p>'}</section>"
        )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>Mechanistic interpretability course: "
        f"results</title><style>{_CSS}</style></head><body><h1>Course results</h1>"
        f"<p class='sub'>generated {time.strftime('%Y-%m-%d %H:%M:%S')}</p>{''.join(sections)}</body></html>"
    )
    path = out / "index.html"
    runtime.atomic_write_text(path, page)
    return path


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_lib.cli", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="execute notebooks with papermill and build the report")
    run_p.add_argument("notebooks", nargs="*", type=Path, help="default: every notebooks/NN_*.ipynb")
    run_p.add_argument("--profile", default="workshop", choices=runtime.PROFILES)
    run_p.add_argument("--out", type=Path, default=Path("outputs"))
    run_p.add_argument("--seed", type=int, default=0)
    run_p.add_argument("--device", default="auto", choices=runtime.DEVICES)
    run_p.add_argument("--kernel", default=KERNEL)
    rep_p = sub.add_parser("report", help="rebuild <out>/index.html from what is there")
    rep_p.add_argument("--out", type=Path, default=Path("outputs"))
    args = parser.parse_args(argv)

    if args.command == "report":
        print(build_report(args.out))
        return 0

    from tqdm.auto import tqdm

    notebooks = args.notebooks or default_notebooks()
    if not notebooks:
        print("no notebooks found", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    bar = tqdm(notebooks, unit="notebook", desc="notebooks", position=0)
    for nb in bar:
        bar.set_description(f"{nb.stem} ({args.profile})")
        res = execute_notebook(nb, args.out, args.profile, args.seed, args.device, args.kernel)
        results.append(res)
        mark = "ok" if res.ok else "FAILED"
        tqdm.write(f"{mark:6s} {res.stem}  {res.wall_time_s:.1f} s")
        if res.error:
            tqdm.write(f"--- {res.stem}: {res.error}")
        build_report(args.out)
    report = build_report(args.out)
    failed = [r for r in results if not r.ok]
    print(f"\nreport: {report.resolve()}")
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    for r in failed:
        print(f"\nFAILED {r.stem}:\n{r.error}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
