"""The instructors' expected-results sheet (course_lib.teaching): rendered from a synthetic run folder, with a
missing key, an unknown notebook and the `make expected-results` command path."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from course_lib import teaching

ROOT = Path(__file__).resolve().parent.parent

COMMON = {"profile": "workshop", "seed": 0, "device": "cpu", "dtype": "float32", "native_bf16": False,
          "torch_threads": 2, "wall_time_s": 120.0}


def _group(node: tuple[float, float, float], excess: tuple[float, float, float], fraction: float) -> dict:
    def ci(v: tuple[float, float, float]) -> dict:
        return {"value": v[0], "lo": v[1], "hi": v[2]}
    return {"n_pairs": 4, "fraction": fraction, "node": ci(node), "edge": ci((3.0, 1.5, 6.0)),
            "null": ci((5.0, 4.9, 5.1)), "excess": ci(excess)}


METRICS = {
    "02_weight_sparse_transformers": COMMON | {
        "target_loss": 0.3, "solved_loss": 0.24, "n_prompts_per_split": 96,
        "frontier_without_failed_control_tasks": {
            "groups": {"sparse 0.1": _group((0.9, 0.4, 1.5), (0.45, 0.14, 0.94), 0.1),
                       "sparse 0.05, width 96": _group((2.5, 1.2, 4.0), (0.8, 0.3, 1.3), 0.05)},
            "slopes": {"node": {"value": 0.01, "lo": -0.2, "hi": 0.2}, "edge": {"value": 0.45, "lo": 0.17, "hi": 0.71}}},
        "controls": {"searches": {"random init/a": {"passed": True}, "flipped m/b": {"passed": False}}},
        "failed_control_tasks": ["b"],
    },
    "03_sparse_autoencoders": COMMON | {
        "nmse": 0.2311, "l0": 32.0, "dead_fraction": 0.0625, "sae_training_tokens": 191488,
        "ce_loss_score": 0.961, "ce_loss_score_mean_floor": 0.924, "delta_ce": 0.492, "ce_zero": 15.2, "ce_mean": 9.04,
        "kl_sae": 0.62, "power_law_exponent": -0.382, "power_law_exponent_ci95": [-0.454, -0.31],
        "power_law_exponent_fixed_tokens": -0.086, "steering_latent": 4545,
        "steering_rate_before": [0.0, 0.0, 0.0], "steering_rate_after": [0.3, 0.0, 0.0],
        "dead_fraction_no_fixes": 0.55, "dead_fraction_all_fixes": 0.0, "control_seeds": [0, 1],
        "fix_effects": {"AuxK": {"dead_fraction": {"measurable": False}, "nmse": {"measurable": False}},
                        "median b_pre": {"dead_fraction": {"measurable": True}, "nmse": {"measurable": True}}},
        "headline": [{"claim": "NMSE power-law exponent", "paper": "negative", "value": "-0.382",
                      "interval": "95% CI [-0.454, -0.31]", "gates_passed": True, "note": ""}],
    },
    "06_extension": COMMON | {"units_compared": 3, "headline": [
        {"claim": "a claim | with a bar", "paper": "p", "value": None, "interval": None, "gates_passed": False,
         "note": "gate failed"}]},
}


def _executed(words: int, figures: int, exercise_minutes: list[int]) -> dict:
    cells = [{"cell_type": "markdown", "source": ["# 03 · A title\n\n", " ".join(["word"] * words)]}]
    cells += [{"cell_type": "markdown", "source": [f"**Exercise {i}: x.** Difficulty ●○○○○ · about {m} min."]}
              for i, m in enumerate(exercise_minutes, 1)]
    cells.append({"cell_type": "markdown", "source": ["## 1. A section\n\nfour words of prose"]})
    cells += [{"cell_type": "code", "source": [], "metadata": {"papermill": {"duration": 30.0}},
               "outputs": [{"data": {"image/png": "..."}}]} for _ in range(figures)]
    cells.append({"cell_type": "code", "source": [], "outputs": [{"data": {"text/markdown": ["rendered reading here"]}}]})
    return {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def _write_run(root: Path, metrics: dict[str, dict], executed: bool = True) -> Path:
    for stem, m in metrics.items():
        d = root / stem
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps(m))
        (d / "run.json").write_text(json.dumps({"run_id": "abcdef0123456789", "finished": "2026-01-01 10:00:00",
                                                "wall_time_s": m.get("wall_time_s", 1.0)}))
        if executed:
            (d / f"{stem}.ipynb").write_text(json.dumps(_executed(400, 4, [10, 5])))
    (root / "_static").mkdir()  # the report's assets: not a notebook
    (root / "_failed" / "03_sparse_autoencoders").mkdir(parents=True)
    return root


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return _write_run(tmp_path / "outputs", METRICS)


def test_find_runs_takes_every_notebook_with_outputs_and_the_last_folder_wins(run_dir: Path, tmp_path: Path):
    runs = teaching.find_runs([run_dir])
    assert list(runs) == ["02_weight_sparse_transformers", "03_sparse_autoencoders", "06_extension"]
    newer = _write_run(tmp_path / "newer", {"03_sparse_autoencoders": COMMON | {"nmse": 0.5}}, executed=False)
    both = teaching.find_runs([run_dir, newer])
    assert both["03_sparse_autoencoders"].metrics["nmse"] == 0.5
    assert both["03_sparse_autoencoders"].executed is None
    assert both["02_weight_sparse_transformers"].record["run_id"] == "abcdef0123456789"
    # one notebook's own folder works too
    assert list(teaching.find_runs([run_dir / "06_extension"])) == ["06_extension"]


def test_sheet_states_numbers_anomalies_and_provenance(run_dir: Path):
    text = teaching.render_sheet(teaching.find_runs([run_dir]), commit="abc1234", machine="a 2-core laptop")
    assert "| profile, seed | workshop, seed 0 |" in text
    assert "abc1234" in text and "a 2-core laptop" in text and "id abcdef012345" in text
    # 02: a group name with dots and a comma, its intervals, and how many node intervals contain 1
    assert "**sparse 0.05, width 96: dense / sparse circuit size**: nodes 2.5x [1.2, 4]" in text
    assert "1 of 2 groups have a node-ratio interval containing 1 (sparse 0.1)" in text
    assert "edges / null is below 1 with its whole interval in 1 of 2 groups" in text
    assert "these models keep 5%-10%" in text
    assert "1 of 2 control searches passed" in text and "without b" in text
    assert "The node slope's interval contains 0" in text
    # 03: steering k of n, the fixes, the floors, the scaling law with its interval
    assert "rose on 1 of 3 prompts (0% / 0% / 0% -> 30% / 0% / 0%)" in text
    assert "AuxK: no measurable effect" in text and "AuxK can show nothing there" in text
    assert "exponent -0.382, 95% CI [-0.454, -0.31]" in text
    assert "NMSE 0.231, L0 32, dead 6%, on 191,488 training tokens" in text
    assert "| NMSE power-law exponent | negative | -0.382 | 95% CI [-0.454, -0.31] | passed |" in text
    # an unknown notebook: its headline claims (a rejected one without its value) and its scalar metrics
    assert "`units_compared`: 3" in text
    assert "(rejected: gate failed)" in text and "a claim / with a bar" in text
    # the time budget: 400 + 7 words ("# 03 · A title" is 3 words, the reading 3, the title cell's) and 4 figures
    assert "## Time budget" in text and "| 03 |" in text


def test_capstone_readings(tmp_path: Path):
    def d(diff: float, lo: float, hi: float) -> dict:
        return {"all": {"diff": diff, "ci95": [lo, hi]}}
    m = COMMON | {"primary_scorer": "keyword_r", "n_units": {"dense neuron": 16, "sparse neuron": 16},
                  "pairs": [{"fraction": 0.4}, {"fraction": 0.1}],
                  "class_means": {"keyword_r": {"dense neuron": {"mean": 0.29, "ci95": [0.25, 0.33]},
                                                "sparse neuron": {"mean": 0.32, "ci95": [0.29, 0.35]},
                                                "dense random": {"mean": 0.30, "ci95": [0.26, 0.34]}}},
                  "differences": {"keyword_r": {"sparse neuron - dense neuron": d(0.03, -0.02, 0.08),
                                                "sparse channel - sae latent": d(-0.08, -0.14, -0.03)}}}
    runs = teaching.find_runs([_write_run(tmp_path / "o", {"05_capstone_sparse_vs_dense_units": m}, executed=False)])
    text = teaching.render_sheet(runs)
    assert "2 matched (sparse, dense) pairs at kept fractions 0.4, 0.1; 16 units per class" in text
    assert "1 of 2 intervals contain 0 (sparse neuron - dense neuron)" in text
    assert "above dense neuron in this run" in text
    assert "**how often units fire**: " + teaching.MISSING in text


def test_a_later_failed_run_is_flagged(run_dir: Path):
    (run_dir / "03_sparse_autoencoders" / "last_failure.json").write_text(json.dumps({"finished": "2026-01-02 09:00:00"}))
    text = teaching.render_sheet(teaching.find_runs([run_dir]))
    assert text.count("a later run failed (finished 2026-01-02 09:00:00)") == 1


def test_a_missing_key_says_so_instead_of_failing(run_dir: Path, tmp_path: Path):
    m = dict(METRICS["03_sparse_autoencoders"])
    for key in ("steering_rate_after", "fix_effects", "power_law_exponent_ci95"):
        m.pop(key)
    m["dead_fraction"] = None
    old = _write_run(tmp_path / "old", {"03_sparse_autoencoders": m, "00_orientation": {}, "04_automated_interpretability":
                                        {"sanity_gates": {}}}, executed=False)
    text = teaching.render_sheet(teaching.find_runs([old]))
    assert text.count(teaching.MISSING) >= 4
    line = next(s for s in text.splitlines() if s.startswith("- **steering with one latent"))
    assert line.endswith(f": {teaching.MISSING}")
    line = next(s for s in text.splitlines() if s.startswith("- **main TopK SAE"))
    assert line.endswith(teaching.MISSING)  # a None counts as missing
    assert "| commit | not in this run |" in text  # nothing recorded, nothing given
    assert "The notebook declares no headline claims." in text


def test_time_budget_from_the_executed_notebook(run_dir: Path):
    nb = teaching.find_runs([run_dir])["03_sparse_autoencoders"]
    b = teaching.time_budget(nb)
    assert (b.figures, b.exercise_minutes, b.n_exercises) == (4, 15, 2)
    assert 400 < b.words < 440  # the prose cell, the exercise lines and the rendered reading
    assert b.compute_minutes == pytest.approx(2.0)
    expected = (b.words / teaching.WORDS_PER_MINUTE + 4 * teaching.FIGURE_MINUTES + teaching.EXERCISE_FACTOR * 15
                + 2.0 + teaching.DISCUSSION_MINUTES)
    assert b.slot_minutes == pytest.approx(expected)
    table = teaching.budget_table({"03_sparse_autoencoders": b})
    assert f"**{5 * round(expected / 5)}**" in table


def test_section_budgets_say_what_cutting_a_section_saves(run_dir: Path):
    nb = teaching.find_runs([run_dir])["03_sparse_autoencoders"]
    first, second = teaching.section_budgets(nb.executed)
    assert first.title == "title and set-up" and first.exercise_minutes == 15 and first.figures == 0
    assert second.title == "1. A section" and second.figures == 4 and second.compute_s == pytest.approx(120.0)
    assert second.minutes == pytest.approx(second.words / teaching.WORDS_PER_MINUTE + 4 * teaching.FIGURE_MINUTES + 2.0)
    table = teaching.section_table([first, second])
    assert "| 1. A section |" in table and "| 120 s |" in table
    assert "Minutes per section" in teaching.render_sheet(teaching.find_runs([run_dir]))
    assert teaching.section_budgets(None) is None


def test_main_writes_the_sheet_and_refuses_an_empty_folder(run_dir: Path, tmp_path: Path, capsys):
    out = tmp_path / "docs" / "sheet.md"
    assert teaching.main([str(run_dir), "--out", str(out), "--commit", "c0ffee", "--machine", "m"]) == 0
    text = out.read_text()
    assert text.startswith("# Expected results and known anomalies") and "c0ffee" in text
    assert teaching.main([str(run_dir), "--out", str(out), "--commit", "03=abc", "--commit", "def"]) == 0
    text = out.read_text()
    assert "| commit | abc |" in text and text.count("| commit | def |") == 2  # 03's own; 02 and 06 the general one
    empty = tmp_path / "empty"
    empty.mkdir()
    assert teaching.main([str(empty), "--out", str(tmp_path / "x.md")]) == 2
    assert "run `make run` first" in capsys.readouterr().err
    assert not (tmp_path / "x.md").exists()


def test_make_target_runs_the_module(run_dir: Path, tmp_path: Path):
    makefile = (ROOT / "Makefile").read_text()
    assert "\nexpected-results: $(STAMP)\n" in makefile
    assert re.search(r"^\.PHONY:.*\bexpected-results\b", makefile, re.M)
    assert re.search(r"^#   make expected-results\b", makefile, re.M)  # listed in the header
    if shutil.which("make") is None:
        pytest.skip("no make on this machine")
    sheet = tmp_path / "sheet.md"
    # -o: treat the setup stamp as up to date, so that -n prints only the target's own command
    printed = subprocess.run(["make", "-s", "-n", "-o", ".venv/.installed", "expected-results", f"RUNS={run_dir}",
                              f"SHEET={sheet}"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    assert "-m course_lib.teaching" in printed and str(sheet) in printed
    done = subprocess.run(printed, shell=True, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "sparse 0.05, width 96" in sheet.read_text()


def test_the_tracked_sheet_is_generated_and_linked():
    sheet = ROOT / "docs" / "expected_results.md"
    text = sheet.read_text()
    assert text.startswith("# Expected results and known anomalies")
    assert "make expected-results" in text and "## Time budget" in text
    assert "docs/expected_results.md" in (ROOT / "TEACHING.md").read_text()


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n#", start + len(heading))
    return text[start:end if end > 0 else None]


def test_teaching_one_day_schedule_adds_up():
    """Each block of the one-day table starts when the one before it ends (its first duration, its first time)."""
    day = _section((ROOT / "TEACHING.md").read_text(), "### One day")
    rows = [r for r in day.splitlines() if re.match(r"^\| \d\d:\d\d", r)]
    starts, lengths = [], []
    for row in rows:
        hh, mm = map(int, re.match(r"^\| (\d\d):(\d\d)", row).groups())
        starts.append(60 * hh + mm)
        block = row.split("|")[2]
        found = re.search(r"\((\d+) min", block)
        lengths.append(int(found.group(1)) if found else None)
    assert len(rows) >= 8 and lengths[-1] is None  # the last row is the end
    for i in range(len(rows) - 1):
        assert starts[i] + lengths[i] == starts[i + 1], rows[i]


def test_teaching_half_days_add_up():
    table = _section((ROOT / "TEACHING.md").read_text(), "### Two half days")
    rows = [r for r in table.splitlines() if re.match(r"^\| \d", r)]
    assert len(rows) >= 2
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        parts = [int(x) for x in re.findall(r"\((?:about )?(\d+)\)", cells[1])]
        parts += [int(x) for x in re.findall(r"(\d+) min slack", cells[1])]
        assert sum(parts) == int(cells[2]), row


def test_teaching_day_before_check_uses_parameters_the_notebook_has():
    """The fallback check passes parameters with papermill's -p: each must be in the learner notebook's parameters cell."""
    text = (ROOT / "TEACHING.md").read_text()
    step = _section(text, "## The day before")
    command = next(line for line in step.splitlines() if "papermill" in line and "USE_REFERENCE_SOLUTIONS True" in line)
    notebook = ROOT / re.search(r"(exercises/\S+\.ipynb)", command).group(1)
    cells = json.loads(notebook.read_text())["cells"]
    params = next("".join(c["source"]) for c in cells if "parameters" in c.get("metadata", {}).get("tags", []))
    for name in re.findall(r"-p (\w+) ", command[command.index("papermill"):]):
        assert re.search(rf"^{name} = ", params, re.M), f"{name} is not a parameter of {notebook.name}"
    assert "--profile smoke" in step and "must **fail** at exercise 1" in step
