"""course_lib.report: the report is well-formed HTML, renders the headline claims each notebook declares (and
hides a number its gates rejected), and neither it nor the runner knows any lesson's metric keys."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

from course_lib import report, runtime

ROOT = Path(__file__).resolve().parent.parent
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
# end tags HTML lets a page leave out (nbconvert's pages use that freedom; the report does not)
OPTIONAL_END = {"p", "li", "dt", "dd", "tr", "td", "th", "thead", "tbody", "tfoot", "option", "colgroup"}


class _Strict(HTMLParser):
    def __init__(self, optional_end: set[str]):
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.optional_end = optional_end
        self.in_raw = 0

    def handle_starttag(self, tag, attrs):
        if tag not in VOID:
            self.stack.append(tag)
        if tag in ("script", "style", "pre", "textarea"):
            self.in_raw += 1

    def handle_startendtag(self, tag, attrs):
        pass

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if tag in ("script", "style", "pre", "textarea"):
            self.in_raw = max(0, self.in_raw - 1)
        while self.stack and self.stack[-1] != tag and self.stack[-1] in self.optional_end:
            self.stack.pop()
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else 'nothing'}> "
                               f"at line {self.getpos()[0]}")
            return
        self.stack.pop()

    def handle_data(self, data):
        if not self.in_raw and re.search(r"(?<![<\w])/(a|p|div|td|tr|figure)>", data):
            self.errors.append(f"stray markup in text at line {self.getpos()[0]}: {data.strip()[:60]!r}")


def html_errors(page: str, optional_end: set[str] = frozenset()) -> list[str]:
    """Unbalanced or mis-nested tags and markup that leaked into text; [] for a well-formed page."""
    p = _Strict(set(optional_end))
    p.feed(page)
    p.close()
    left = [t for t in p.stack if t not in p.optional_end and t not in ("html", "body", "head")]
    return p.errors + ([f"never closed: {left}"] if left else [])


def test_the_checker_catches_what_a_browser_would_show_as_text():
    assert html_errors("<p><a href='x'><img src='y'></a></p>") == []
    assert html_errors("<figure><a href='x'><img src='y'>/a><figcaption>c</figcaption></figure>")
    assert html_errors("<div><b>x</div></b>")
    assert html_errors("<table><tr><td>x</table>") and not html_errors("<table><tr><td>x</table>", OPTIONAL_END)


def _outputs(tmp_path: Path) -> Path:
    out = tmp_path / "outputs"
    for stem, headline in [
        ("01_toy", [runtime.Headline("pentagon", "0.4", "0.41")]),
        ("04_auto", [runtime.Headline("scores by kind", "latents > neurons", None, gates_passed=False,
                                      note="no scorer passed <its gates>"),
                     runtime.Headline("detection", "latents > neurons", "sae 0.71", "sae [0.6, 0.8]")]),
    ]:
        d = out / stem
        (d / "figures").mkdir(parents=True)
        (d / "figures" / "a.png").write_bytes(b"\x89PNG")
        (d / "figures" / "index.json").write_text(json.dumps([{"name": "a", "file": "a.png", "caption": "A & B"}]))
        (d / "run.json").write_text(json.dumps({"run_id": "x", "ok": True, "profile": "smoke", "wall_time_s": 1}))
        metrics = {"secret_value": 0.123456, "headline": [vars(h) | {} for h in headline]}
        (d / "metrics.json").write_text(json.dumps(metrics))
    return out


def test_report_is_well_formed_and_renders_declared_headlines(tmp_path):
    out = _outputs(tmp_path)
    page = report.build_report(out).read_text()
    assert html_errors(page) == []
    assert "pentagon" in page and "0.41" in page
    assert "sae 0.71" in page and "sae [0.6, 0.8]" in page  # value and its interval
    assert "failed this notebook" in page and "no scorer passed &lt;its gates&gt;" in page
    assert "/a>" not in re.sub(r"</a>", "", page)
    section = page[page.index("<section id='04_auto'>"):]
    assert section.index("Headline claims") < section.index("<details><summary>every value in metrics.json")
    assert "sae 0.71" in section[:section.index("<details><summary>every value")]  # the gated claim, up front
    assert "0.123" in section[section.index("<details><summary>every value"):]  # raw values only when opened


def test_a_failure_banner_keeps_the_page_well_formed(tmp_path):
    out = _outputs(tmp_path)
    (out / "01_toy" / "last_failure.json").write_text(json.dumps(
        {"run_id": "y", "ok": False, "cell_index": 3, "error": "ValueError: <b>bad</b>\nline 2"}))
    page = report.build_report(out).read_text()
    assert html_errors(page) == [] and "last run failed at cell 3" in page


def test_executed_notebook_html_is_well_formed(smoke_outputs):
    pages = sorted(smoke_outputs.glob("[0-9][0-9]_*/*.html"))
    for p in pages:  # present once the notebook tests have run; nbconvert may omit optional ends
        assert html_errors(p.read_text(), OPTIONAL_END) == [], p


def test_neither_runner_nor_report_knows_a_lesson_metric_key():
    lesson_keys = set()
    for nb in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"):
        for cell in json.loads(nb.read_text())["cells"]:
            src = "".join(cell["source"])
            if "write_metrics" in src:
                lesson_keys |= set(re.findall(r'^\s*"([a-z][a-z0-9_]{3,})":', src, re.M))
    for module in (ROOT / "course_lib").glob("*/notebook.py"):  # metrics assembled by the lesson packages
        lesson_keys |= set(re.findall(r'^\s*"([a-z][a-z0-9_]{3,})":', module.read_text(), re.M))
    assert len(lesson_keys) > 20
    common = {"profile", "seed", "device", "dtype", "wall_time_s", "headline", "model"}
    for module in ("cli.py", "report.py"):
        text = (ROOT / "course_lib" / module).read_text()
        used = {k for k in lesson_keys - common if re.search(rf"[\"']{k}[\"']", text)}
        assert not used, f"course_lib/{module} reads lesson metrics {sorted(used)}"
