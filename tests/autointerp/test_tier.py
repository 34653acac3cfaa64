"""course_lib.autointerp.tier: the shipped language-model tier is loaded only for the SAE it was computed on,
with its records attached to the swapped results, and the shipped set is what notebook 04 promises."""

from __future__ import annotations

import dataclasses
import gzip
import json
import types

import pytest

from course_lib.autointerp import records, tier
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
