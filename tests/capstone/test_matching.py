"""Matched pairs: 02's width points, the least capable dense width at least as capable, the same seed."""

from __future__ import annotations

from course_lib.capstone import matching


def test_matched_width_takes_the_least_capable_width_at_least_as_capable():
    widths = [(16, 3.98), (32, 3.56), (48, 3.33), (64, 3.19)]
    assert matching.matched_width(3.40, widths) == 48
    assert matching.matched_width(3.56, widths) == 32  # equal loss counts as at least as capable
    assert matching.matched_width(5.0, widths) == 16
    assert matching.matched_width(3.0, widths) == 64  # none as capable: the most capable
    assert matching.matched_width(3.40, list(reversed(widths))) == 48  # order does not matter


def test_pairs_of_the_shipped_set_are_conservative_and_same_seed(reference):
    entries, _, _, match_loss, _ = reference
    assert matching.available_fractions(entries)[:3] == [0.4, 0.2, 0.1]
    pairs = matching.matched_pairs(entries, match_loss, [0.4, 0.1], [0, 1, 2])
    assert [p.fraction for p in pairs] == [0.4] * 3 + [0.1] * 3
    for p in pairs:
        assert p.at_least_as_capable and p.gap >= 0
        assert entries[p.dense]["train"]["seed"] == entries[p.sparse]["train"]["seed"] == p.seed
        assert entries[p.dense]["train"]["target_fraction"] == 1.0
        # no dense width between them: the next less capable width is worse than the sparse model
        points = matching.width_points(entries, match_loss)
        assert not any(p.dense_loss < q.val_loss <= p.sparse_loss for q in points if q.width != p.dense_width)
    # seeds of one fraction meet the same width
    assert len({p.dense_width for p in pairs if p.fraction == 0.4}) == 1


def test_a_width_function_is_used(reference):
    entries, _, _, match_loss, _ = reference
    pairs = matching.matched_pairs(entries, match_loss, [0.2], [0], width_fn=lambda loss, widths: 64)
    assert pairs[0].dense_width == 64 and "d64" in pairs[0].dense
