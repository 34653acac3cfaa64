"""The notebook runner: failures reported with their cell, good outputs never overwritten by a failed
run, stalls and runaway cells stopped, offline HTML, and a report that is a report."""

import json
import time

import nbformat
import pytest

from course_lib import cli, report

# A cell that makes the kernel finish but swallows its own execute reply: exactly the widget-cell hang
# seen under papermill (kernel idle, executor waiting forever for a reply that never comes).
SWALLOW_REPLY = """
k = get_ipython().kernel
_send = k.session.send
def _drop_reply(stream, msg_or_type, *a, **kw):
    t = msg_or_type if isinstance(msg_or_type, str) else msg_or_type.get("header", {}).get("msg_type")
    if t == "execute_reply":
        k.session.send = _send
        return msg_or_type if isinstance(msg_or_type, dict) else {"content": {"status": "ok"}}
    return _send(stream, msg_or_type, *a, **kw)
k.session.send = _drop_reply
"""

GOOD_BODY = (
    "import json, os\nos.makedirs(OUT_DIR + '/figures', exist_ok=True)\n"
    "json.dump({'profile': PROFILE, 'answer': ANSWER}, open(OUT_DIR + '/metrics.json', 'w'))\n"
    "if ANSWER < 0:\n    raise ValueError('deliberate failure')"
)


def _write_nb(path, *bodies, answer=42):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell(
        f'PROFILE = "workshop"\nSEED = 0\nOUT_DIR = "x"\nDEVICE = "auto"\nANSWER = {answer}')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# Title\n\nWhat this notebook shows, in one paragraph.\n\n$x^2$"),
                params, *[nbformat.v4.new_code_cell(b) for b in bodies]]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_run_reports_failing_cell_and_builds_report(tmp_path, capsys):
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    good = _write_nb(nbdir / "01_good.ipynb", GOOD_BODY)
    bad = _write_nb(nbdir / "02_bad.ipynb", "raise ValueError('deliberate failure')")
    out = tmp_path / "outputs"
    code = cli.main(["run", str(good), str(bad), "--profile", "smoke", "--out", str(out), "--kernel", "python3"])
    assert code == 1
    captured = capsys.readouterr()
    assert "02_bad" in captured.err and "deliberate failure" in captured.err and "raise ValueError" in captured.err
    assert "01_good  cell" in captured.out  # the terminal shows which cell runs
    run = json.loads((out / "01_good" / "run.json").read_text())
    assert run["ok"] and run["profile"] == "smoke"
    assert json.loads((out / "01_good" / "metrics.json").read_text())["answer"] == 42
    assert (out / "01_good" / "01_good.ipynb").exists()
    page = (out / "index.html").read_text()
    assert "01_good" in page and "passed" in page and "FAILED" in page and "42" in page


def test_failed_run_keeps_the_last_good_outputs_and_says_so(tmp_path):
    nb = _write_nb(tmp_path / "01_x.ipynb", GOOD_BODY)
    out = tmp_path / "outputs"
    first = cli.execute_notebook(nb, out, "smoke", kernel="python3", echo=None)
    assert first.ok
    _write_nb(nb, GOOD_BODY, answer=-1)  # now it writes answer -1, then fails
    second = cli.execute_notebook(nb, out, "smoke", kernel="python3", echo=None)
    assert not second.ok and second.cell_index is not None
    assert json.loads((out / "01_x" / "metrics.json").read_text())["answer"] == 42  # good run untouched
    failure = json.loads((out / "01_x" / "last_failure.json").read_text())
    assert "deliberate failure" in failure["error"]
    assert json.loads((out / "_failed" / "01_x" / "metrics.json").read_text())["answer"] == -1
    assert not list(out.glob(".01_x*")), "no temporary folder left behind"
    report.build_report(out)
    page = (out / "index.html").read_text()
    assert "last run failed at cell" in page and "last good run" in page
    _write_nb(nb, GOOD_BODY, answer=7)  # a later success clears the banner
    assert cli.execute_notebook(nb, out, "smoke", kernel="python3", echo=None).ok
    assert not (out / "01_x" / "last_failure.json").exists()
    assert json.loads((out / "01_x" / "metrics.json").read_text())["answer"] == 7


def test_the_report_tells_runs_apart_by_id_even_when_they_end_in_the_same_second(tmp_path):
    """A good run and a failed one that finished in the same second: the run id, not the clock, decides."""
    nb = _write_nb(tmp_path / "01_x.ipynb", GOOD_BODY)
    out = tmp_path / "outputs"
    assert cli.execute_notebook(nb, out, "smoke", kernel="python3", echo=None).ok
    _write_nb(nb, GOOD_BODY, answer=-1)
    assert not cli.execute_notebook(nb, out, "smoke", kernel="python3", echo=None).ok
    run = json.loads((out / "01_x" / "run.json").read_text())
    failure = json.loads((out / "01_x" / "last_failure.json").read_text())
    assert len(run["run_id"]) == 32 and run["run_id"] != failure["run_id"]
    failure["finished"] = run["finished"]  # both end in the same second
    (out / "01_x" / "last_failure.json").write_text(json.dumps(failure))
    report.build_report(out)
    assert "last good run" in (out / "index.html").read_text()
    # a failure with no good run before it: run.json is the failed run itself
    run_failed = dict(failure, ok=False)
    (out / "01_x" / "run.json").write_text(json.dumps(run_failed))
    report.build_report(out)
    assert "no good run yet" in (out / "index.html").read_text()


def test_a_stalled_cell_fails_with_its_index_and_source(tmp_path):
    nb = _write_nb(tmp_path / "01_stall.ipynb", "x = 1", SWALLOW_REPLY, "y = 2")
    start = time.monotonic()
    res = cli.execute_notebook(nb, tmp_path / "out", "smoke", kernel="python3", echo=None, stall_s=3,
                               cell_timeout_s=120)
    took = time.monotonic() - start
    assert not res.ok
    assert "stall" in res.error and "_drop_reply" in res.error, res.error
    assert res.cell_index is not None
    assert took < 100, "the stall detector, not the cell timeout, ended it"


def test_a_runaway_cell_hits_the_cell_timeout(tmp_path):
    nb = _write_nb(tmp_path / "01_slow.ipynb", "import time\ntime.sleep(60)")
    res = cli.execute_notebook(nb, tmp_path / "out", "smoke", kernel="python3", echo=None, cell_timeout_s=3)
    assert not res.ok and "time.sleep(60)" in res.error and "Timeout" in res.error


def test_repeat_tag_runs_tagged_cells_n_times(tmp_path):
    nb = nbformat.read(_write_nb(tmp_path / "01_rep.ipynb", "COUNT = 0", "COUNT += 1",
                                 "import json; json.dump({'count': COUNT}, open(OUT_DIR + '/metrics.json', 'w'))"),
                       as_version=4)
    nb.cells[3].metadata["tags"] = ["widget"]
    nbformat.write(nb, tmp_path / "01_rep.ipynb")
    res = cli.execute_notebook(tmp_path / "01_rep.ipynb", tmp_path / "out", "smoke", kernel="python3",
                               echo=None, repeat_tag=("widget", 20))
    assert res.ok, res.error
    assert json.loads((tmp_path / "out" / "01_rep" / "metrics.json").read_text())["count"] == 20


def test_executed_html_loads_nothing_from_the_network(tmp_path):
    nb = _write_nb(tmp_path / "01_html.ipynb", "print('hello')")
    assert cli.execute_notebook(nb, tmp_path / "out", "smoke", kernel="python3", echo=None).ok
    page = (tmp_path / "out" / "01_html" / "01_html.html").read_text()
    assert report.external_references(page) == []
    assert "_static/mathjax/MathJax.js" in page
    assert (tmp_path / "out" / "_static" / "mathjax" / "MathJax.js").exists()


def test_external_reference_scanner_finds_what_a_browser_would_fetch():
    assert report.external_references('<script src="https://cdn.example/x.js"></script>')
    assert report.external_references("<link rel=stylesheet href='http://x/y.css'>")
    assert report.external_references("import mermaid from 'https://cdn/x.mjs'")
    assert not report.external_references('<a href="https://example.org">a link</a> <!-- http://x -->')


def test_select_notebooks_by_number_and_clear_error():
    assert [p.stem[:2] for p in cli.select_notebooks(["02"])] == ["02"]
    with pytest.raises(ValueError, match="valid: 00, 01"):
        cli.select_notebooks(["99"])


LIVE_EXPLORER = """
import matplotlib.pyplot as plt
from IPython.display import display
from course_lib import explorer

class Live(explorer.Explorer):
    def __init__(self, i):
        fig, ax = plt.subplots(); ax.plot([0, i])
        self.html, self.png = f"<b>view {i}</b>", explorer.fig_png(fig)

    def build(self):
        import ipywidgets as W
        html_w, img_w = explorer.view_widgets(self)
        button = W.Button(description="go")
        button.on_click(lambda *_: explorer.set_view(self, html_w, img_w))
        explorer.set_view(self, html_w, img_w)  # an update as a click would make
        return W.VBox([button, html_w, img_w])

N_SHOWN = globals().get("N_SHOWN", 0) + 1
display(Live(N_SHOWN))
"""


def test_live_widget_cells_repeated_never_stall(tmp_path):
    # With a front end (headless=False) explorers build real ipywidgets; the cell is executed 30 times
    # under the runner's executor: no Output capture, so nothing may stall it.
    nb = nbformat.read(_write_nb(tmp_path / "01_live.ipynb", "N_SHOWN = 0", LIVE_EXPLORER,
                                 "import json; json.dump({'shown': N_SHOWN}, open(OUT_DIR + '/metrics.json', 'w'))"),
                       as_version=4)
    nb.cells[3].metadata["tags"] = ["widget"]
    nbformat.write(nb, tmp_path / "01_live.ipynb")
    res = cli.execute_notebook(tmp_path / "01_live.ipynb", tmp_path / "out", "smoke", kernel="python3", echo=None,
                               repeat_tag=("widget", 30), headless=False, stall_s=20, cell_timeout_s=60)
    assert res.ok, res.error
    assert json.loads((tmp_path / "out" / "01_live" / "metrics.json").read_text())["shown"] == 30
    executed = nbformat.read(tmp_path / "out" / "01_live" / "01_live.ipynb", as_version=4)
    views = [o for c in executed.cells for o in c.get("outputs", [])
             if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert len(views) == 30  # live widget views, one per execution
