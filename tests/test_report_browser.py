"""The report and the executed notebooks' HTML in a real browser: every image loads, no console error,
and no request leaves the machine (everything is loaded from file://)."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from conftest import CHROMIUM_ARGS

from course_lib import cli, report


def _outputs(tmp_path: Path, smoke_outputs: Path) -> Path:
    """The smoke outputs of the notebook tests when they ran; else one small notebook run here."""
    if smoke_outputs.exists() and any((d / "run.json").exists() for d in smoke_outputs.iterdir() if d.is_dir()):
        return smoke_outputs
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('PROFILE = "smoke"\nSEED = 0\nOUT_DIR = "x"\nDEVICE = "cpu"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# 01 · A figure\n\nA notebook that draws one figure.\n\n$e^{i\\pi}+1=0$"),
                params, nbformat.v4.new_code_cell(
                    "from course_lib import runtime\nimport matplotlib.pyplot as plt\n"
                    "run = runtime.start_run(PROFILE, SEED, OUT_DIR, DEVICE)\n"
                    "fig, ax = plt.subplots(); ax.plot([1, 2, 3]); ax.set_title('a line')\n"
                    "run.save_figure(fig, 'line'); run.write_metrics({'answer': 0.123456})")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "01_figure.ipynb"
    nbformat.write(nb, path)
    out = tmp_path / "outputs"
    assert cli.execute_notebook(path, out, "smoke", kernel="python3", echo=None).ok
    return out


def test_report_and_notebook_pages_load_offline_in_chromium(tmp_path, smoke_outputs, chromium_path):
    playwright = pytest.importorskip("playwright.sync_api")
    out = _outputs(tmp_path, smoke_outputs)
    index = report.build_report(out)
    pages = [index] + sorted(out.glob("[0-9][0-9]_*/*.html"))
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS)
        try:
            for page_path in pages:
                page = browser.new_page()
                errors, external = [], []
                page.on("console", lambda m, errors=errors: m.type == "error" and errors.append(m.text))
                page.on("pageerror", lambda e, errors=errors: errors.append(str(e)))
                page.on("request", lambda r, external=external: not r.url.startswith(("file:", "data:", "about:"))
                        and external.append(r.url))
                page.goto(page_path.as_uri(), wait_until="load")
                page.wait_for_timeout(500)
                broken = page.evaluate(
                    "Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)")
                n_images = page.evaluate("document.images.length")
                assert not broken, f"{page_path.name}: images that did not load: {broken[:5]}"
                assert not external, f"{page_path.name}: requests to the network: {external[:5]}"
                assert not errors, f"{page_path.name}: console errors: {errors[:5]}"
                if page_path == index:
                    assert n_images >= 1, "the report shows no figure"
                    shot = out / "browser"
                    shot.mkdir(exist_ok=True)
                    page.set_viewport_size({"width": 1280, "height": 900})
                    page.screenshot(path=str(shot / "report.png"), full_page=False)
                    assert page.locator("figcaption").count() == n_images
                page.close()
        finally:
            browser.close()
    assert json.loads(next(out.glob("[0-9][0-9]_*/run.json")).read_text())["ok"] is not None
