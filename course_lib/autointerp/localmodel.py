"""A local causal LM (SmolLM2-135M-Instruct by default) with the few calls autointerp needs.

* :meth:`LocalLM.candidate_probs` -- one batched forward over token sequences ``[b, L]`` (right
  padded), read at chosen positions, returns the probabilities of a few *candidate* next tokens
  renormalised among themselves: ``softmax(h_pos @ W_U[cand].T)`` ``[n_pos, n_cand]``. Only the
  ``n_cand`` rows of the unembedding are multiplied, never the whole ``[L, d_vocab]`` logits
  (49,152 x positions floats), so the cost is the transformer body's forward pass.
* :meth:`LocalLM.token_logprobs` -- log-probabilities of the tokens actually there (surprisal scorer).
* :meth:`LocalLM.generate_many` -- greedy chat completions of a batch of prompts (the local explainer).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch

from course_lib import lm

MIN_SHARED_PREFIX = 16  # shortest shared prefix worth a separate cached forward (tokens)


def shared_prefix_length(seqs: Sequence[Sequence[int]]) -> int:
    """Length of the longest prefix common to all ``seqs``, leaving at least one token in each."""
    p = min(len(s) for s in seqs) - 1
    first = seqs[0]
    for s in seqs[1:]:
        q = 0
        while q < p and s[q] == first[q]:
            q += 1
        p = q
    return max(p, 0)


@dataclasses.dataclass
class LocalLM:
    """A Hugging Face causal LM and its tokenizer; see :func:`load_local_lm`."""

    model: Any  # transformers causal LM (model.model = the body, model.lm_head = unembedding)
    tokenizer: Any  # its tokenizer (with a chat template for the explainer)
    name: str = "smollm2"  # name given to course_lib.lm.load_hf

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def single_token_id(self, text: str) -> int | None:
        ids = self.encode(text)
        return ids[0] if len(ids) == 1 else None

    def chat_ids(self, messages: list[dict[str, str]], assistant_prefix: str = "") -> list[int]:
        """Token ids of a chat prompt ending inside the assistant turn (after ``assistant_prefix``)."""
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self.encode(text + assistant_prefix)

    def _padded(self, seqs: Sequence[Sequence[int]], start: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``seq[start:]`` of every sequence, right-padded: ``(ids [b, L - start], mask [b, L - start])``."""
        L = max(len(s) for s in seqs)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(seqs), L - start), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), L - start), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s) - start] = torch.tensor(list(s[start:]), dtype=torch.long)
            mask[i, : len(s) - start] = 1
        return ids.to(self.device), mask.to(self.device)

    @torch.no_grad()
    def hidden(self, seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-pad ``seqs`` and run the body: ``(h [b, L, d_model], lengths [b])``.

        The prompts of one unit share a long prefix (instructions, few-shot example, explanation). When
        that shared prefix has at least :data:`MIN_SHARED_PREFIX` tokens it runs **once** (batch 1, its
        keys and values cached and repeated over the batch) and only the suffixes run batched; ``h`` is
        the same as one padded forward over the whole sequences (to float rounding, tested), at the cost
        of ``p + sum_i (len_i - p)`` tokens instead of ``sum_i len_i``.
        """
        lengths = torch.tensor([len(s) for s in seqs])
        p = shared_prefix_length(seqs)
        if len(seqs) < 2 or p < MIN_SHARED_PREFIX:
            ids, mask = self._padded(seqs, 0)
            return self.model.model(input_ids=ids, attention_mask=mask).last_hidden_state, lengths
        prefix = torch.tensor([list(seqs[0][:p])], dtype=torch.long, device=self.device)
        pre = self.model.model(input_ids=prefix, use_cache=True)
        cache = pre.past_key_values
        cache.batch_repeat_interleave(len(seqs))  # [1, heads, p, d] -> [b, heads, p, d]
        ids, mask = self._padded(seqs, p)
        full_mask = torch.cat([torch.ones((len(seqs), p), dtype=torch.long, device=self.device), mask], dim=1)
        suf = self.model.model(input_ids=ids, attention_mask=full_mask, past_key_values=cache, use_cache=False)
        h = torch.cat([pre.last_hidden_state.expand(len(seqs), -1, -1), suf.last_hidden_state], dim=1)
        return h, lengths

    @torch.no_grad()
    def candidate_probs(self, seqs: Sequence[Sequence[int]], positions: Sequence[Sequence[int]],
                        candidates: Sequence[int]) -> list[torch.Tensor]:
        """Next-token probabilities of ``candidates`` at ``positions[i]`` of ``seqs[i]``, renormalised.

        One batched forward. Returns, per sequence, ``[len(positions[i]), n_cand]`` float32 on CPU.
        """
        h, _ = self.hidden(seqs)
        w = self.model.lm_head.weight[torch.tensor(list(candidates), device=h.device)].float()  # [c, d]
        out = []
        for i, pos in enumerate(positions):
            hp = h[i, torch.tensor(list(pos), dtype=torch.long, device=h.device)].float()  # [n, d]
            out.append(torch.softmax(hp @ w.T, dim=-1).cpu())
        return out

    @torch.no_grad()
    def token_logprobs(self, seqs: Sequence[Sequence[int]], starts: Sequence[int]) -> list[torch.Tensor]:
        """``log p(seq[t] | seq[:t])`` for ``t >= starts[i]`` (``starts[i] >= 1``), one batched forward.

        Full-vocabulary logits only at the scored positions. Returns ``[len(seq) - start]`` float32 per
        sequence, on CPU.
        """
        h, _ = self.hidden(seqs)
        w = self.model.lm_head.weight.float()  # [vocab, d]
        out = []
        for i, (seq, start) in enumerate(zip(seqs, starts)):
            if start < 1:
                raise ValueError("the first scored token needs a context: start >= 1")
            hp = h[i, start - 1: len(seq) - 1].float()  # predicts tokens start .. len-1
            logp = torch.log_softmax(hp @ w.T, dim=-1)
            target = torch.tensor(list(seq[start:]), dtype=torch.long, device=h.device)
            out.append(logp.gather(1, target[:, None])[:, 0].cpu())
        return out

    @torch.no_grad()
    def generate(self, prompt_ids: Sequence[int], max_new_tokens: int = 32) -> str:
        """Greedy continuation of ``prompt_ids`` (no repeated 3-grams), decoded."""
        return self.generate_many([prompt_ids], max_new_tokens)[0]

    @torch.no_grad()
    def generate_many(self, prompts: Sequence[Sequence[int]], max_new_tokens: int = 32) -> list[str]:
        """Greedy continuations of several prompts in **one** batched ``generate`` (left-padded).

        Decoding one token costs about the same for 1 or 8 sequences on a CPU (the weights are read
        once per step), so a batch of ``b`` prompts takes little more than one. Left padding is masked
        and the positions follow the mask, so each continuation is the one its prompt gets alone
        (to float rounding: a near-tie between two tokens can break the other way).
        """
        L = max(len(p) for p in prompts)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        ids = torch.full((len(prompts), L), pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), L), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, L - len(p):] = torch.tensor(list(p), dtype=torch.long)
            mask[i, L - len(p):] = 1
        out = self.model.generate(
            input_ids=ids.to(self.device), attention_mask=mask.to(self.device), max_new_tokens=max_new_tokens,
            do_sample=False, no_repeat_ngram_size=3, pad_token_id=pad,
        )
        return [self.tokenizer.decode(o[L:], skip_special_tokens=True) for o in out]


def load_local_lm(name: str = "smollm2", dtype: str = "auto", device: str | torch.device = "cpu") -> LocalLM:
    """Load a local LM with :func:`course_lib.lm.load_hf` (SmolLM2 offline by default).

    ``dtype="auto"`` picks bfloat16 only where the device computes it natively (about 2x faster than
    float32 there, several times slower elsewhere); probabilities are computed in float32.
    """
    model, tok = lm.load_hf(name, dtype=dtype, device=device)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.temperature = None
        model.generation_config.top_p = None
        model.generation_config.top_k = None
    return LocalLM(model=model, tokenizer=tok, name=name)
