"""course_lib.autointerp.tier: the shipped language-model tier is loaded only for the SAE it was computed on,
with its records attached to the swapped results, and the shipped set is what notebook 04 promises."""

from __future__ import annotations

import dataclasses
import gzip
import json
import types

import pytest

from course_lib import sae
from course_lib.autointerp import records, tier, units
from course_lib.autointerp.results import Result


def _result(unit, kind, explainer="local:smollm2", text="the token x"):
    rec = records.Record(0, "top", [1, 2], ["x", "y"], [1.0, 0.0])
    ur = records.UnitRecords(unit, kind, 1.0, [rec], [rec], [rec])
    return Result(unit, kind, explainer, text, None, {"detection_auroc": 0.7}, ur.to_dict(), {})


def _write(folder, key="abc", version=tier.TIER_VERSION):
    folder.mkdir()
    own = [_result("sae/1", "sae"), _result("sae/2", "sae")]
    swapped = [dataclasses.replace(r, explainer=r.explainer + "/swapped", records={}) for r in own]
    for name, rows in (("own", own), ("swapped", swapped)):
        with gzip.open(folder / f"{name}.jsonl.gz", "wt") as f:
            f.writelines(r.to_json() + "\n" for r in rows)
    with gzip.open(folder / "chooser.jsonl.gz", "wt") as f:
        f.write(json.dumps({"unit": "sae/1", "kind": "sae", "candidates": [[1, 'the token "x".', -1.0]],
                            "chosen_k": 1, "r_chosen": 0.5, "r_fixed": 0.5}) + "\n")
        f.write(json.dumps({"unit": "sae/2", "none": True}) + "\n")
    (folder / "manifest.json").write_text(json.dumps({"version": version, "sae_key": key}))
    return own


def test_load_checks_the_sae_key_and_reattaches_records(tmp_path):
    own = _write(tmp_path / "t")
    loaded = tier.load(types.SimpleNamespace(key="abc"), tmp_path / "t")
    assert [r.unit for r in loaded.own] == ["sae/1", "sae/2"]
    assert all(s.records == o.records for s, o in zip(loaded.swapped, own))  # records of the unit, not stored twice
    assert [c.unit for c in loaded.choices] == ["sae/1"] and loaded.choices[0].chosen_k == 1
    with pytest.raises(tier.TierMismatch, match="key abc.*key other"):
        tier.load(types.SimpleNamespace(key="other"), tmp_path / "t")
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        tier.load(types.SimpleNamespace(key="abc"), tmp_path / "absent")
    _write(tmp_path / "old", version=tier.TIER_VERSION - 1)
    with pytest.raises(tier.TierMismatch, match="version"):
        tier.load(types.SimpleNamespace(key="abc"), tmp_path / "old")


def test_subset_units_takes_the_first_of_each_kind():
    urs = [types.SimpleNamespace(unit=f"{k}/{i}", kind=k) for k in ("sae", "neuron") for i in range(5)]
    assert tier.subset_units(urs, 2) == {"sae/0", "sae/1", "neuron/0", "neuron/1"}


def test_the_shipped_tier_is_notebook_04s_workshop_tier():
    """The shipped set exists, was computed on the workshop profile's SAE settings (a changed SAE config fails
    here, so the set is recomputed rather than silently mixed), and holds what notebook 04 promises."""
    m = json.loads((tier.SHIPPED / "manifest.json").read_text())
    assert m["sae_key"] == sae.default.default_sae_key("workshop", seed=0)
    assert m["version"] == tier.TIER_VERSION and m["config"]["profile"] == "workshop"
    assert {"command", "machine", "versions", "wall_s", "cpu_s"} <= set(m)
    loaded = tier.load(types.SimpleNamespace(key=m["sae_key"]))
    for kind in units.UNIT_KINDS:
        own = [r for r in loaded.own if r.kind == kind]
        assert len(own) >= 48, kind
        full = [r for r in own if len(r.unit_records().test_top) == 20 and len(r.unit_records().test_random) == 20]
        assert len(full) >= 0.9 * len(own), kind  # the full records (a rare unit activates on fewer windows)
        assert sum(r.explanation is not None for r in own) >= 0.9 * len(own), kind
        assert sum(r.kind == kind for r in loaded.swapped) >= m["subset_per_kind"] - 1, kind
        assert sum(c.kind == kind for c in loaded.choices) >= m["subset_per_kind"] - 2, kind
    assert {r.unit for r in loaded.swapped} <= {r.unit for r in loaded.own}
    assert all("extra" in dataclasses.asdict(r) and r.scores.get("detection_auroc") is not None
               for r in loaded.own if r.explanation is not None)
