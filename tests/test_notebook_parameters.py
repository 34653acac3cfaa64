"""Every notebook parameter at the bounds of its stated range (smoke profile unless named).

Only the ``parameters`` cell and the validation cell after it run, in-process, in a fresh namespace
(as papermill would inject: the parameters cell, then the overrides, then the validation cell). The
bottom and top of each range must be accepted; one step outside must raise ParameterError naming
the parameter, in the validation cell, so no accepted value can fail after compute has started.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from course_lib import runtime, sae

NB_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = {p.stem[:2]: p for p in sorted(NB_DIR.glob("[0-9][0-9]_*.ipynb"))}


def below(x: float) -> float:
    return math.nextafter(x, -math.inf)


def above(x: float) -> float:
    return math.nextafter(x, math.inf)


def _cells(nb: str) -> tuple[str, str]:
    cells = json.loads(NOTEBOOKS[nb].read_text(encoding="utf-8"))["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    params = [i for i, c in enumerate(code) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1
    return "".join(code[params[0]]["source"]), "".join(code[params[0] + 1]["source"])


def run_validation(nb: str, tmp_path: Path, **overrides) -> dict:
    """Exec the notebook's parameters + validation cells with ``overrides``; return the namespace."""
    param_src, check_src = _cells(nb)
    ns: dict = {"__name__": "__notebook__"}
    exec(compile(param_src, f"{nb}-parameters", "exec"), ns)
    ns.update({"PROFILE": "smoke", "DEVICE": "cpu", "OUT_DIR": str(tmp_path / "out"), **overrides})
    exec(compile(check_src, f"{nb}-validation", "exec"), ns)
    return ns


# (notebook, parameter, accepted values, rejected values, extra overrides)
CASES = [
    *[(nb, "SEED", [0, 2**32 - 1], [-1, 2**32, 10**23], {}) for nb in ("00", "01", "02", "03", "04", "05")],
    ("00", "ATTENTION_LAYER", [0, 29], [-1, 30], {}),
    ("00", "PROMPT", ["x"], ["", "   "], {}),
    ("01", "BIG_SWEEP_FEATURES", [100, 200], [99, 150, 201], {}),
    ("01", "WEIGHT_SPARSITY_LEVELS", [[0.01, 1.0], [1.0, 0.01]],
     [[below(0.01), 1.0], [0.5, above(1.0)], [0.5], [0.5, 0.5]], {}),
    ("02", "REFERENCE_SET", ["auto", "retrain"], ["none", "/no/such/set", 3], {}),
    ("02", "TARGET_LOSS", [0.0, 0, 0.69, "auto"], [below(0.0), -1, above(0.69), 1, "fast", None, True], {}),
    ("03", "LAYER", [0, 29], [-1, 30], {}),
    ("03", "K", [1, 128], [0, 129, 200, 256], {}),  # smoke: the smallest sweep SAE has 128 latents
    ("03", "K", [1, 256], [0, 257], {"PROFILE": "workshop"}),
    ("03", "K", [1, 256], [0, 257], {"PROFILE": "full"}),
    ("03", "N_DASHBOARDS", [0, 20], [-1, 21], {}),
    ("04", "UNITS_PER_KIND", [0, 1000], [-1, 1001], {}),
    ("04", "SAMPLING", ["top", "quantiles"], ["random"], {}),
    ("04", "BACKEND", ["local", "baseline"], ["openai"], {}),
    ("04", "SCORE_ON", ["local"], ["remote", "server"], {}),  # "server" needs BACKEND="openai_compatible"
    ("05", "FRACTIONS", ["auto", [0.4], [0.02, 0.4]], ["all", [], [0.3], 0.4], {}),
    ("05", "UNITS_PER_CLASS", [0, 256], [-1, 257], {}),
    ("05", "CIRCUIT_TASKS", [-1, 7], [-2, 8], {}),
]
ACCEPT = [(nb, name, v, extra) for nb, name, ok, _, extra in CASES for v in ok]
REJECT = [(nb, name, v, extra) for nb, name, _, bad, extra in CASES for v in bad]


def _id(case) -> str:
    nb, name, v, extra = case
    return f"{nb}-{name}={v!r}" + (f"-{extra['PROFILE']}" if extra else "")


@pytest.mark.parametrize("case", ACCEPT, ids=_id)
def test_bounds_of_each_range_are_accepted(case, tmp_path):
    nb, name, value, extra = case
    ns = run_validation(nb, tmp_path, **{name: value}, **extra)
    if nb == "03":  # every SAE config the notebook will build with k=K is valid (no late failure)
        widths = [ns["main_cfg"].n_latents, ns["SWEEP_WIDTH"], *ns["SWEEP_WIDTHS"]]
        for w in widths:
            sae.SAEConfig(d_in=576, n_latents=w, k=ns["K"])
    if nb == "02" and name == "TARGET_LOSS":
        assert 0.0 <= ns["PRUNE_CFG"].target_loss <= 0.69


@pytest.mark.parametrize("case", REJECT, ids=_id)
def test_one_step_outside_is_rejected_naming_the_parameter(case, tmp_path):
    nb, name, value, extra = case
    with pytest.raises(runtime.ParameterError, match=re.escape(name)) as err:
        run_validation(nb, tmp_path, **{name: value}, **extra)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and "valid values" in str(err.value):
        assert re.search(r"valid values: .*\d", str(err.value)), "the message names the valid range"


def test_target_loss_negative_names_the_range(tmp_path):
    with pytest.raises(runtime.ParameterError, match=r"TARGET_LOSS=-1 .*\[0\.0, 0\.69\]"):
        run_validation("02", tmp_path, TARGET_LOSS=-1)


def test_k_above_the_smoke_sizes_names_k_not_n_latents(tmp_path):
    with pytest.raises(runtime.ParameterError, match=r"K=200 is out of range; valid values: \[1, 128\]"):
        run_validation("03", tmp_path, K=200)


def test_unwritable_out_dir_fails_in_the_validation_cell(tmp_path):
    with pytest.raises(runtime.ParameterError, match="OUT_DIR='/proc/x'"):
        run_validation("00", tmp_path, OUT_DIR="/proc/x")


@pytest.mark.parametrize("nb", sorted(NOTEBOOKS))
@pytest.mark.parametrize("bad", [
    {"PROFILE": "quick"}, {"DEVICE": "tpu"}, {"DEVICE": "cuda"}, {"OUT_DIR": "/proc/no/such/dir"},
], ids=lambda b: "-".join(f"{k}={v}" for k, v in b.items()))
def test_common_parameters_fail_in_the_validation_cell(nb, bad, tmp_path):
    """PROFILE, DEVICE and OUT_DIR of every notebook: a wrong value stops the validation cell (before any
    compute) with a ParameterError naming it and, for the choices, the valid values."""
    import torch

    if bad.get("DEVICE") == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    name = next(iter(bad))
    with pytest.raises(runtime.ParameterError, match=re.escape(name)) as err:
        run_validation(nb, tmp_path, **bad)
    if name in ("PROFILE", "DEVICE"):
        assert "valid" in str(err.value)
    if name == "PROFILE":
        assert "smoke, workshop, full" in str(err.value)

