"""The learner notebooks in a real JupyterLab, in headless Chromium.

The test starts JupyterLab on 127.0.0.1 (random token and port, a temporary root folder, its own
settings and workspaces), opens each learner notebook (``exercises/NN_*.ipynb``, copied with its
parameters cell rewritten to the smoke profile with ``USE_REFERENCE_SOLUTIONS = True``), runs all
cells and checks: the course kernel is selected, every code cell ran without an error output, every
widget cell shows a live widget view (no "Error displaying widget"), and one interaction per widget
(a slider step, a dropdown pick, a number or a prompt typed) changes its HTML or image. The kernel
is the real course kernel, without ``COURSE_LIB_HEADLESS``, so the explorers build their ipywidgets.
Screenshots: ``outputs/browser/<notebook>.png`` (before and after the interactions).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import CHROMIUM_ARGS
from test_exercise_notebooks import _exercise_names

ROOT = Path(__file__).resolve().parent.parent
LEARNER = sorted((ROOT / "exercises").glob("[0-9][0-9]_*.ipynb"))
SCREENSHOTS = ROOT / "outputs" / "browser"
KERNEL = "mechinterp-course"  # registered by `make setup` (course_lib.cli.KERNEL)
KERNEL_DISPLAY_NAME = "Python (mechinterp-course)"
RUN_ALL_TIMEOUT_S = 600  # the smoke profile: 20-60 s per notebook on a busy 2-core machine, models cached
WIDGET_UPDATE_TIMEOUT_S = 120
SMOKE_PARAMETERS = {"PROFILE": '"smoke"', "USE_REFERENCE_SOLUTIONS": "True", "DEVICE": '"cpu"'}

pytestmark = pytest.mark.notebook


def learner_copy(nb_path: Path, folder: Path, out_dir: Path) -> Path:
    """``nb_path`` copied into ``folder`` with its parameters cell set to the smoke profile, the reference
    solutions on and ``OUT_DIR`` = ``out_dir`` (each assignment line rewritten in place, as a learner would)."""
    nb = json.loads(nb_path.read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
    source = "".join(cell["source"])
    for name, value in SMOKE_PARAMETERS.items() | {"OUT_DIR": json.dumps(str(out_dir))}.items():
        source, n = re.subn(rf"^{name}\s*=.*$", f"{name} = {value}", source, count=1, flags=re.M)
        assert n == 1, f"{nb_path.name}: no `{name} = ...` line in the parameters cell"
    cell["source"] = source.splitlines(keepends=True)
    dest = folder / nb_path.name
    dest.write_text(json.dumps(nb, indent=1))
    return dest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    def __init__(self, root: Path, session_cache: Path):
        self.root, self.token, self.port = root, secrets.token_hex(16), _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (root / ".settings/@jupyterlab/notebook-extension").mkdir(parents=True)
        # Every cell in the DOM (no virtual scrolling), so each output can be inspected.
        (root / ".settings/@jupyterlab/notebook-extension/tracker.jupyterlab-settings").write_text(
            json.dumps({"windowingMode": "none"}))
        (root / ".settings/@jupyterlab/apputils-extension").mkdir(parents=True)
        (root / ".settings/@jupyterlab/apputils-extension/notification.jupyterlab-settings").write_text(
            json.dumps({"fetchNews": "false", "checkForUpdates": False}))
        env = {k: v for k, v in os.environ.items() if k not in ("COURSE_LIB_HEADLESS", "MPLBACKEND")}
        env.update(
            PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),  # this checkout's course_lib
            COURSE_LIB_CACHE=str(session_cache),
            JUPYTER_CONFIG_DIR=str(root / ".config"), JUPYTER_RUNTIME_DIR=str(root / ".runtime"),
            JUPYTERLAB_SETTINGS_DIR=str(root / ".settings"), JUPYTERLAB_WORKSPACES_DIR=str(root / ".workspaces"),
        )
        jupyter = Path(sys.executable).with_name("jupyter")
        self.log = root / "jupyter.log"
        self._log_file = self.log.open("w")
        self.proc = subprocess.Popen(
            [str(jupyter), "lab", "--no-browser", f"--IdentityProvider.token={self.token}", "--ServerApp.ip=127.0.0.1",
             f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0", f"--ServerApp.root_dir={root / 'lab'}",
             "--LabApp.expose_app_in_browser=True", "--ServerApp.terminals_enabled=False",
             *(["--allow-root"] if os.geteuid() == 0 else [])],
            env=env, stdout=self._log_file, stderr=subprocess.STDOUT, start_new_session=True)

    def api(self, path: str, method: str = "GET") -> object:
        req = urllib.request.Request(f"{self.url}{path}", method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            body = r.read()
        return json.loads(body) if body else None

    def wait_ready(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                self.api("/api/status")
                return
            except OSError:
                time.sleep(0.5)
        raise TimeoutError(f"JupyterLab did not answer in {timeout_s} s:\n{self.log_tail()}")

    def shutdown_sessions(self) -> None:
        for s in self.api("/api/sessions"):
            self.api(f"/api/sessions/{s['id']}", method="DELETE")

    def log_tail(self, n: int = 4000) -> str:
        self._log_file.flush()
        return self.log.read_text(errors="replace")[-n:]

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=20)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        finally:
            self._log_file.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory, session_cache):
    root = tmp_path_factory.mktemp("lab")
    (root / "lab").mkdir()
    server = Lab(root, session_cache)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser(chromium_path):
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


# --------------------------------------------------------------------------- in-page helpers (window.jupyterapp)

_NOTEBOOK_READY = """() => {
  const app = window.jupyterapp, w = app && app.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return !!(w && w.content && w.context.isReady && k && k.status === 'idle');
}"""

# Errors the kernel publishes outside any cell's outputs (widget callbacks: JupyterLab's log console).
_WATCH_KERNEL = r"""() => {
  window.__kernelErrors = [];
  window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.iopubMessage.connect((_, msg) => {
    const t = msg.header.msg_type, c = msg.content;
    if (t === 'error') window.__kernelErrors.push(c.ename + ': ' + c.evalue + '\n' + c.traceback.join('\n'));
    if (t === 'stream' && c.name === 'stderr' && /Traceback|Exception in/.test(c.text)) window.__kernelErrors.push(c.text);
  });
}"""

_RUN_ALL = """() => {
  window.__runAll = undefined;
  window.jupyterapp.commands.execute('notebook:run-all-cells').then(
    ok => { window.__runAll = String(ok); }, err => { window.__runAll = 'error: ' + err; });
}"""

_IDLE = """() => {
  const k = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
  return k.status === 'idle' && Array.from(document.querySelectorAll('.jp-InputPrompt'))
    .every(p => !p.textContent.includes('[*]'));
}"""

# Per code cell: its index, tags, execution count, error outputs from the model, and the
# `data-test-cell` attribute set on its node so that Playwright can find it.
_CELLS = """() => {
  const nb = window.jupyterapp.shell.currentWidget.content;
  return nb.widgets.map((c, i) => {
    c.node.setAttribute('data-test-cell', String(i));
    if (c.model.type !== 'code') return null;
    const outs = c.model.outputs.toJSON();
    return {index: i, tags: c.model.getMetadata('tags') || [], count: c.model.executionCount,
            source: c.model.sharedModel.getSource().slice(0, 200),
            text: outs.filter(o => o.output_type === 'stream').map(o => o.text).join(''),
            errors: outs.filter(o => o.output_type === 'error').map(o => o.ename + ': ' + o.evalue),
            widget_views: outs.filter(o => o.data && o.data['application/vnd.jupyter.widget-view+json']).length};
  }).filter(c => c !== null);
}"""

# What a widget shows: its HTML widgets' content and its images' sources.
_VIEW = """(root) => {
  const html = Array.from(root.querySelectorAll('.widget-html-content')).map(e => e.innerHTML);
  const imgs = Array.from(root.querySelectorAll('.widget-image')).map(e => e.getAttribute('src') || '');
  return JSON.stringify([html, imgs]);
}"""


def _ansi_free(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)[-4000:]


def _assert_no_widget_error(panel) -> None:
    broken = panel.get_by_text("Error displaying widget")
    assert broken.count() == 0, f"a widget failed to display: {broken.first.inner_text()!r}"


def _interact(page, view) -> str:
    """One interaction with the widget ``view`` (a locator): the first control among a slider, a dropdown
    with a choice left, a number box, a text box; returns what was done."""
    slider = view.locator(".noUi-handle")
    if slider.count():
        slider.first.focus()
        page.keyboard.press("ArrowRight")
        return "slider +1 step"
    for select in view.locator("select").all():
        options = select.locator("option").all_inner_texts()
        current = select.evaluate("s => s.selectedIndex")
        choices = [i for i in range(len(options)) if i != current]
        if choices:
            select.select_option(index=choices[0])
            return f"picked {options[choices[0]]!r}"
    number = view.locator("input[type=number]")
    if number.count():
        box = number.first
        value = int(box.input_value() or 0)
        box.fill(str(value + 1))
        box.press("Enter")
        return f"number {value} -> {value + 1}"
    text = view.locator("input[type=text]")
    if text.count():
        text.first.fill("The Eiffel Tower is in the city of")
        text.first.press("Enter")
        return "typed a prompt"
    button = view.locator("button")
    if button.count():
        button.first.click()
        return "clicked a button"
    raise AssertionError("the widget has no control to interact with")


@pytest.mark.parametrize("nb_path", LEARNER, ids=lambda p: p.stem)
def test_learner_notebook_runs_in_jupyterlab_with_live_widgets(nb_path, browser, lab):
    nb = learner_copy(nb_path, lab.root / "lab", lab.root / "outputs" / nb_path.stem)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page_errors: list[str] = []
    page.on("pageerror", lambda e: page_errors.append(str(e)))
    # Nothing may leave the machine: anything but the local server is refused.
    page.route(re.compile(r"^(?!http://127\.0\.0\.1:\d+/|data:|blob:).*"), lambda route: route.abort())
    started = time.monotonic()
    try:
        # A workspace of its own, reset: only this notebook is open (not the previous ones, whose kernels are gone).
        page.goto(f"{lab.url}/lab/workspaces/{nb_path.stem}/tree/{nb.name}?reset&token={lab.token}",
                  wait_until="domcontentloaded")
        page.wait_for_function(_NOTEBOOK_READY, timeout=120_000, polling=500)
        page.evaluate("window.jupyterapp.shell.currentWidget.node.setAttribute('data-test-panel', '1')")
        panel = page.locator("[data-test-panel]")
        kernel_name = panel.locator(".jp-Toolbar-kernelName").first.inner_text()
        assert kernel_name.strip() == KERNEL_DISPLAY_NAME, f"kernel shown: {kernel_name!r}"
        kernel_spec = page.evaluate("window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.name")
        assert kernel_spec == KERNEL, f"kernel started: {kernel_spec!r}"

        page.evaluate(_WATCH_KERNEL)
        page.evaluate(_RUN_ALL)
        page.wait_for_function("() => window.__runAll !== undefined", timeout=RUN_ALL_TIMEOUT_S * 1000, polling=1000)
        page.wait_for_function(_IDLE, timeout=60_000, polling=500)
        run_s = time.monotonic() - started
        cells = page.evaluate(_CELLS)
        page.screenshot(path=str(SCREENSHOTS / f"{nb_path.stem}.png"), full_page=False)

        errors = [f"cell {c['index']}: {e}" for c in cells for e in c["errors"]]
        assert not errors, "error outputs:\n" + "\n".join(errors) + f"\n{lab.log_tail()}"
        not_run = [c["index"] for c in cells if c["count"] is None and c["source"].strip()]
        assert not not_run, f"cells not executed: {not_run} (run all: {page.evaluate('window.__runAll')})"
        assert page.evaluate("window.__runAll") == "true", page.evaluate("window.__runAll")
        stderr_tracebacks = panel.locator(
            '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]', has_text="Traceback")
        assert stderr_tracebacks.count() == 0, stderr_tracebacks.first.inner_text()
        _assert_no_widget_error(panel)
        printed = "".join(c["text"] for c in cells)
        for name in _exercise_names(nb_path):
            assert f"using the reference solution for {name}\n" in printed, f"{name}: the reference was not used"

        widget_cells = [c for c in cells if "widget" in c["tags"]]
        assert widget_cells, "no cell tagged 'widget'"
        for c in widget_cells:
            assert c["widget_views"] >= 1, f"cell {c['index']} shows no live widget (headless?): {c['source']!r}"
            view = panel.locator(f'[data-test-cell="{c["index"]}"] .jp-OutputArea-output .jupyter-widgets').first
            try:
                view.wait_for(state="attached", timeout=30_000)
            except Exception as exc:  # noqa: BLE001 - said plainly
                raise AssertionError(f"cell {c['index']}: a widget output but no widget view in the page: is "
                                     "JupyterLab's widget renderer (pip package jupyterlab_widgets) installed?") from exc
            view.scroll_into_view_if_needed()
            assert view.locator(".widget-html-content, .widget-image").count(), f"cell {c['index']}: empty widget view"
            before = view.evaluate(_VIEW)
            done = _interact(page, view)
            try:
                page.wait_for_function(f"(b) => ({_VIEW})(document.querySelector("
                                       f"'[data-test-panel] [data-test-cell=\"{c['index']}\"] .jp-OutputArea-output .jupyter-widgets')) !== b",
                                       arg=before, timeout=WIDGET_UPDATE_TIMEOUT_S * 1000, polling=500)
            except Exception as exc:  # noqa: BLE001 - reported with the server log
                raise AssertionError(f"cell {c['index']}: the widget did not update after: {done}\n"
                                     + _ansi_free("\n".join(page.evaluate("window.__kernelErrors")))) from exc
            page.wait_for_function(_IDLE, timeout=WIDGET_UPDATE_TIMEOUT_S * 1000, polling=500)
            page.wait_for_timeout(300)
            view.evaluate("e => e.scrollIntoView({block: 'start'})")
            page.screenshot(path=str(SCREENSHOTS / f"{nb_path.stem}-widget{c['index']}.png"), full_page=False)
        kernel_errors = page.evaluate("window.__kernelErrors")
        assert not kernel_errors, "kernel errors:\n" + _ansi_free("\n".join(kernel_errors))
        assert "Exception in comm" not in lab.log_tail(100_000), lab.log_tail()
        _assert_no_widget_error(panel)
        assert not page_errors, f"page errors: {page_errors[:5]}"
        print(f"{nb_path.stem}: ran in {run_s:.0f} s, {len(widget_cells)} widget(s) updated")
    finally:
        page.close()
        lab.shutdown_sessions()
        shutil.rmtree(lab.root / "outputs" / nb_path.stem, ignore_errors=True)
