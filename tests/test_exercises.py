"""course_lib.exercises: solution markers, the learner-version generator, and the explicit fallback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from course_lib import capstone, circuits, exercises, lens, sae, toy, workshop
from course_lib.autointerp import exercises as autointerp_exercises

ROOT = Path(__file__).resolve().parent.parent

CELL = '''def double(x):
    # x: a number
    # BEGIN SOLUTION hint: multiply by two
    y = 2 * x
    return y
    # END SOLUTION


double = exercises.use("double", double, lambda x: 2 * x, check)'''


def _nb(*sources: str) -> dict:
    cells = [{"cell_type": "code", "execution_count": None, "id": f"c{i}", "metadata": {}, "outputs": [],
              "source": s} for i, s in enumerate(sources)]
    return {"cells": [{"cell_type": "markdown", "id": "m", "metadata": {}, "source": "# title"}] + cells,
            "metadata": {"kernelspec": {"name": "mechinterp-course"}}, "nbformat": 4, "nbformat_minor": 5}


def test_split_solution_replaces_the_region_by_a_stub_with_the_hint():
    learner, solution = exercises.split_solution(CELL)
    assert "    raise NotImplementedError('hint: multiply by two')" in learner
    assert "y = 2 * x" not in learner and "BEGIN" not in learner and "END SOLUTION" not in learner
    assert "double = exercises.use(" in learner  # code outside the region is kept
    assert "    y = 2 * x\n    return y" in solution and "SOLUTION" not in solution
    assert exercises.split_solution("x = 1") is None


@pytest.mark.parametrize("bad, match", [
    ("# BEGIN SOLUTION hint: a\nx = 1", "never closed"),
    ("x = 1\n# END SOLUTION", "without BEGIN"),
    ("# BEGIN SOLUTION\nx = 1\n# END SOLUTION", "hint"),
    ("# BEGIN SOLUTION hint: a\n# BEGIN SOLUTION hint: b\n# END SOLUTION", "inside"),
])
def test_malformed_markers_are_errors(bad, match):
    with pytest.raises(exercises.MarkerError, match=match):
        exercises.split_solution(bad)


def test_generate_adds_a_collapsed_solution_after_each_exercise_and_leaves_the_rest():
    src = _nb("import torch", CELL)
    before = json.dumps(src)
    out = exercises.generate(src)
    assert json.dumps(src) == before  # the source is not modified
    kinds = [c["cell_type"] for c in out["cells"]]
    assert kinds == ["markdown", "code", "code", "markdown"]
    assert out["cells"][1] == src["cells"][1]
    details = "".join(out["cells"][3]["source"])
    assert details.startswith("<details>") and details.rstrip().endswith("</details>")
    assert "y = 2 * x" in details and out["cells"][3]["id"] == "c1-solution"
    def check(fn):
        try:
            return "ok" if fn(2) == 4 else "bad"
        except NotImplementedError:
            return exercises.NOT_ATTEMPTED

    ns = {"exercises": exercises, "check": check}
    with pytest.raises(exercises.ExerciseError, match=r"double: not attempted.*hint: multiply by two.*USE_REFERENCE"):
        exec("".join(out["cells"][2]["source"]), ns)
    assert exercises.has_exercises(src) and not exercises.has_exercises(_nb("x = 1"))


def test_a_two_tier_hint_becomes_two_collapsed_blocks_before_the_solution():
    cell = CELL.replace("hint: multiply by two", "hint: double the input | API: return 2 * x")
    assert exercises.hint_tiers("double the input | API: return 2 * x") == ("double the input", "return 2 * x")
    assert exercises.hint_tiers("multiply by two") == ("multiply by two", None)
    out = exercises.generate(_nb(cell))
    stub = "".join(out["cells"][1]["source"])
    assert "double the input" not in stub and "return 2 * x" not in stub and exercises.HINTS_BELOW in stub
    md = "".join(out["cells"][2]["source"])
    i1, i2, i3 = md.index("Hint 1: the idea"), md.index("Hint 2: the API"), md.index(exercises.SOLUTION_SUMMARY)
    assert i1 < md.index("double the input") < i2 < md.index("return 2 * x") < i3
    assert md.count("<details>") == md.count("</details>") == 3


def test_use_returns_the_learner_function_when_it_passes(capsys):
    def mine(x):
        return 2 * x

    got = exercises.use("double", mine, lambda x: x + x, lambda fn: "double: correct")
    assert got is mine
    assert capsys.readouterr().out == "double: correct\n"


def test_use_reference_is_explicit_and_printed(capsys):
    def ref(x):
        return 2 * x

    def not_done(x):
        raise NotImplementedError

    assert exercises.use("double", not_done, ref, lambda fn: pytest.fail("no check"), use_reference=True) is ref
    assert capsys.readouterr().out == "using the reference solution for double\n"


def test_use_stops_on_a_wrong_answer_with_the_checkers_diagnosis():
    with pytest.raises(toy.exercises.ExerciseError, match="divided by"):
        exercises.use("dimensions_per_feature", lambda W: W.shape[1] / W.pow(2).sum(dim=(1, 2)).sqrt(),
                      toy.dimensions_per_feature, toy.exercises.check_dimensions_per_feature)


def test_committed_learner_versions_match_the_generator():
    """`make exercises` output is committed: regenerate and compare."""
    problems = workshop.drift()
    assert not problems, "run `make exercises` and commit exercises/:\n" + "\n".join(problems)
    assert {p.stem[:2] for p in (ROOT / "exercises").glob("*.ipynb")} >= {"00", "01", "02", "03", "04"}


def _stubs(stem: str) -> dict[str, object]:
    """The functions of a learner notebook's exercise cells, defined from their stub source."""
    nb = json.loads((ROOT / "exercises" / f"{stem}.ipynb").read_text())
    ns: dict[str, object] = {}
    for cell in nb["cells"]:
        text = "".join(cell["source"])
        if cell["cell_type"] == "code" and "raise NotImplementedError(" in text:
            exec(text.split("\n\n\n")[0], {"torch": __import__("torch")}, ns)  # the def, not the use() call
    return ns


@pytest.mark.parametrize("stem, checks", [
    ("00_orientation", {"zero_ablation_hook": lens.exercises.check_zero_ablation_hook,
                        "token_loss": lens.exercises.check_token_loss,
                        "head_ablation_hook": lens.exercises.check_head_ablation_hook,
                        "logit_lens_probs": lens.exercises.check_logit_lens_probs,
                        "steering_hook": lens.exercises.check_steering_hook}),
    ("02_weight_sparse_transformers", {"kept_fraction": circuits.exercises.check_kept_fraction,
                                       "project_topk": circuits.exercises.check_project_topk,
                                       "hard_mask": circuits.exercises.check_hard_mask,
                                       "weight_edges": circuits.exercises.check_weight_edges,
                                       "accept_circuit": circuits.exercises.check_accept_circuit,
                                       "smallest_k": circuits.exercises.check_smallest_k}),
    ("03_sparse_autoencoders", {"topk_activation": sae.exercises.check_topk_activation,
                                "nmse": sae.exercises.check_nmse,
                                "sae_train_step": sae.exercises.check_sae_train_step,
                                "auxk_loss": sae.exercises.check_auxk_loss,
                                "ce_loss_score": sae.exercises.check_ce_loss_score}),
    ("01_superposition_toy_models", {"generate_batch": toy.exercises.check_generate_batch,
                                     "forward_and_loss": toy.exercises.check_forward_and_loss,
                                     "dimensions_per_feature": toy.exercises.check_dimensions_per_feature,
                                     "feature_dimensionality": toy.exercises.check_feature_dimensionality,
                                     "topk_per_instance": toy.exercises.check_topk_per_instance}),
    ("04_automated_interpretability", {"discretise": autointerp_exercises.check_discretise,
                                       "pooled_correlation": autointerp_exercises.check_pooled_correlation,
                                       "auroc": autointerp_exercises.check_auroc,
                                       "balanced_accuracy": autointerp_exercises.check_balanced_accuracy,
                                       "expected_activation": autointerp_exercises.check_expected_activation,
                                       "detection_questions": autointerp_exercises.check_detection_questions}),
    ("05_capstone_sparse_vs_dense_units", {"matched_width": capstone.exercises.check_matched_width,
                                           "orient": capstone.exercises.check_orient,
                                           "top_token_share": capstone.exercises.check_top_token_share,
                                           "token_weights": capstone.exercises.check_token_weights}),
])
def test_every_learner_stub_is_reported_not_attempted_with_its_hint(stem, checks):
    stubs = _stubs(stem)
    assert set(stubs) == set(checks)
    for name, check in checks.items():
        assert check(stubs[name]) == exercises.NOT_ATTEMPTED
        with pytest.raises(exercises.ExerciseError, match=rf"{name}: not attempted.*hint: "):
            exercises.use(name, stubs[name], None, check)


@pytest.mark.parametrize("folder", ["notebooks", "exercises"])
def test_no_notebook_turns_reference_solutions_on_by_default(folder):
    for path in sorted((ROOT / folder).glob("*.ipynb")):
        assert "USE_REFERENCE_SOLUTIONS = True" not in path.read_text(), (
            f"{folder}/{path.name}: the learner's code must be what runs; fall back per run, not by default")
