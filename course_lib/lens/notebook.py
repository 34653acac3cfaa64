"""What notebook 00's figures show, as Markdown built from the run's own numbers (nothing here prints).

Each function takes results the notebook computed and returns a Markdown string that the notebook
``display(Markdown(...))``s under the figure, so that no sentence claims more than the run shows.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from course_lib.lens.predictions import LensTrace, ranked_costs
from course_lib.lens.sink import SinkProfile, norm_jump, sink_onset, uniform_bos_share


def _span(values: torch.Tensor) -> str:
    lo, hi = float(values.min()), float(values.max())
    return f"{lo:.2f}" if abs(hi - lo) < 0.005 else f"{lo:.2f}-{hi:.2f}"


def _layers(layers: Sequence[int]) -> str:
    """``[3, 4, 5, 7]`` -> ``"layers 3-5 and 7"``."""
    runs: list[list[int]] = []
    for layer in layers:
        if runs and layer == runs[-1][-1] + 1:
            runs[-1].append(layer)
        else:
            runs.append([layer])
    parts = [f"{r[0]}-{r[-1]}" if len(r) > 1 else f"{r[0]}" for r in runs]
    word = "layer" if len(layers) == 1 else "layers"
    return f"{word} {', '.join(parts[:-1])} and {parts[-1]}" if len(parts) > 1 else f"{word} {parts[0]}"


def sink_reading(profile: SinkProfile) -> str:
    """Does the sink form before the norm outlier? The layers, shares and ratios of this run."""
    share, ratio = profile.layer_bos_share, profile.norm_ratio
    onset, jump = sink_onset(profile), norm_jump(profile)
    uniform = uniform_bos_share(profile.norms.shape[-1])
    head = (f"**In this run** the BOS norm jumps at layer {jump} (to {float(ratio[jump]):.0f}x the median token; "
            f"largest {float(ratio.max()):.0f}x). ")
    if onset is None:
        return head + (f"No layer sends three times the uniform share ({uniform:.2f}) of its attention to BOS on "
                       "this text, so this run cannot say how the sink relates to the outlier.")
    if onset < jump:
        threshold = 3 * uniform
        sink_before = [layer for layer in range(onset, jump) if float(share[layer]) >= threshold]
        idx = torch.tensor(sink_before)
        return head + (
            f"But on this text the sink is already there before it: {_layers(sink_before)} send "
            f"{_span(share[idx])} of their attention to BOS (uniform attention would send {uniform:.2f}; the most "
            f"BOS-bound head of these layers {float(profile.bos_share[idx].max()):.2f}) while the BOS norm there is "
            f"at most {float(ratio[idx].max()):.0f}x the median. So the outlier is **not how the sink is first "
            f"built**. At layer {jump} itself the BOS share is {float(share[jump]):.2f}; after it, layers "
            f"{jump + 1}-{len(share) - 1} send {_span(share[jump + 1:])}. Whether the outlier helps keep the "
            "sink in those later layers is a causal question this figure cannot answer (one way to ask it: "
            "shrink the BOS residual after the jump and measure the BOS share).")
    return head + (f"The sink appears at layer {onset} (BOS share {float(share[onset]):.2f}, uniform "
                   f"{uniform:.2f}), not before the jump, so this run is consistent with the outlier helping to "
                   "build the sink; a correlation, not a proof.")


def ablation_reading(losses: dict[str, list[float]], layers: Sequence[int],
                     bos_kept: dict[tuple[str, int], float], jump: int | None = None, top: int = 5) -> str:
    """The costliest components, ranked, and how much of each cost remains when BOS is left intact.

    ``bos_kept[(component, layer)]`` is the loss when that component is zeroed at every position but BOS.
    """
    clean = losses["clean"][0]
    ranked = ranked_costs(losses, layers)[:top]
    rows = "\n".join(
        f"| {i} | {c} {layer} | +{cost:.2f} | "
        + (f"+{bos_kept[(c, layer)] - clean:.2f} |" if (c, layer) in bos_kept else "not measured |")
        for i, (c, layer, cost) in enumerate(ranked, start=1)
    )
    text = ("**The costliest ablations in this run** (loss increase in nats/token; the last column zeroes the "
            "component everywhere *except* at BOS):\n\n| rank | component | zeroed everywhere | zeroed except at BOS |\n"
            "| --- | --- | --- | --- |\n" + rows + "\n\n")
    if len(ranked) < 2:
        return text
    c1, l1, v1 = ranked[0]
    text += f"{c1} {l1} is the costliest (+{v1:.2f}). "
    for comp, layer, cost in ranked[1:]:
        if (comp, layer) not in bos_kept:
            continue
        kept = bos_kept[(comp, layer)] - clean
        if kept < 0.5 * cost:
            text += (f"{comp} {layer} (+{cost:.2f}, {cost / v1:.0%} of {c1} {l1}'s cost) keeps only +{kept:.2f} when left intact at "
                     "BOS: almost all of its cost comes from the BOS position alone. ")
            if jump is not None and layer == jump:
                text += (f"It writes into the residual stream of layer {jump}, where the BOS norm jumps, so it may "
                         "be what writes the outlier, and later layers may depend on that. ")
        else:
            text += (f"{comp} {layer} (+{cost:.2f}) still costs +{kept:.2f} when left intact at BOS: its cost "
                     "is at ordinary tokens. ")
    text += ("What a costly deep component does is a hypothesis, not a finding: it may do work many tokens need, "
             "or zero may be far outside anything later layers ever see. To check: mean-ablate it instead of "
             "zeroing (Exercise 1's hook returning the mean activation); zero it at BOS only and redraw the "
             "norm and attention-share figure above under that hook.")
    return text


def heads_reading(layer: int, costs: Sequence[float], chosen: Sequence[int], prev_share: torch.Tensor,
                  bos_share: torch.Tensor, n_pos: int) -> str:
    """The heads of ``layer`` whose ablation costs most, with their previous-token and BOS shares."""
    items = ", ".join(f"head {h} (+{costs[h]:.3f}; previous token {float(prev_share[h]):.2f}, BOS "
                      f"{float(bos_share[h]):.2f})" for h in sorted(chosen, key=lambda h: -costs[h]))
    prev = [h for h in chosen if float(prev_share[h]) >= 0.4]
    text = (f"**In this run** the costliest heads of layer {layer}, costliest first, are {items}; shares are of attention, "
            "averaged over the evaluation text. The figure draws these heads on the short prompt, where a "
            "pattern can look different from that average. ")
    if prev:
        who = (f"Heads {', '.join(map(str, prev))} put" if len(prev) > 1 else f"Head {prev[0]} puts")
        what = "previous-token heads" if len(prev) > 1 else "a previous-token head"
        text += f"{who} at least 0.4 of the attention on the previous token: {what} by this measure. "
    else:
        text += "None of them puts 0.4 or more of its attention on the previous token. "
    return text + (f"(Uniform attention over these {n_pos}-token windows would put on average "
                   f"{uniform_bos_share(n_pos):.2f} on BOS, and a little less on the previous token.)")


def lens_reading(trace: LensTrace) -> str:
    """Where the final answer first reaches the top 100, the top 1 and probability 0.5."""
    rank, prob = trace.answer_rank, trace.answer_prob

    def first(mask: torch.Tensor) -> int | None:
        hits = torch.nonzero(mask).flatten()
        return int(hits[0]) if len(hits) else None

    t100, t1, half = first(rank <= 100), first(rank == 1), first(prob > 0.5)
    name = repr(trace.answer.token)
    parts = [f"**In this run** the answer {name} ends with probability {float(prob[-1]):.2f}."]
    parts.append(f"It first enters the top 100 at layer {t100}" if t100 is not None else "It is never in the top 100")
    parts.append(f", becomes the top token at layer {t1}" if t1 is not None else ", never becomes the top token")
    parts.append(f" and passes 0.5 at layer {half}." if half is not None else " and never passes 0.5.")
    early = int(rank[: max(1, len(rank) // 2)].min())
    return "".join(parts[:1]) + " " + "".join(parts[1:]) + (
        f" In the first half of the layers its best rank is {early}.")


def steering_reading(probs: torch.Tensor, layers: Sequence[int], labels: Sequence[str], position: int) -> str:
    """Up to which layer steering at ``position`` flips the answer from ``labels[1]`` to ``labels[0]``."""
    flipped = [layer for layer, row in zip(layers, probs, strict=True) if float(row[0]) > float(row[1])]
    to, frm = repr(labels[0]), repr(labels[1])
    if not flipped:
        return f"**In this run** steering at position {position} never made {to} more likely than {frm}."
    last = max(flipped)
    after = [layer for layer in layers if layer > last]
    text = (f"**In this run** adding the vector at position {position} makes {to} more likely than {frm} at "
            f"{len(flipped)} of {len(layers)} layers, up to layer {last} (there P({to}) = "
            f"{float(probs[list(layers).index(last), 0]):.2f}). ")
    if after:
        i = list(layers).index(after[0])
        text += (f"From layer {after[0]} on it no longer flips the answer (P({frm}) = {float(probs[i, 1]):.2f}), most "
                 "likely because later positions have already read what they need from that position by then, so "
                 "changing it there comes too late.")
    return text
