"""A local causal LM (SmolLM2-135M-Instruct by default) with the few calls autointerp needs.

* :meth:`LocalLM.candidate_probs` -- one batched forward over token sequences ``[b, L]`` (right
  padded), read at chosen positions, returns the probabilities of a few *candidate* next tokens
  renormalised among themselves: ``softmax(h_pos @ W_U[cand].T)`` ``[n_pos, n_cand]``. Only the
  ``n_cand`` rows of the unembedding are multiplied, never the whole ``[L, d_vocab]`` logits
  (49,152 x positions floats), so the cost is the transformer body's forward pass.
* :meth:`LocalLM.token_logprobs` -- log-probabilities of the tokens actually there (surprisal scorer).
* :meth:`LocalLM.generate` -- greedy chat completion (the local explainer).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch

from course_lib import lm


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

    @torch.no_grad()
    def hidden(self, seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-pad ``seqs`` and run the body: ``(h [b, L, d_model], lengths [b])``."""
        lengths = torch.tensor([len(s) for s in seqs])
        L = int(lengths.max())
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(seqs), L), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), L), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(list(s), dtype=torch.long)
            mask[i, : len(s)] = 1
        out = self.model.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device))
        return out.last_hidden_state, lengths

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
        ids = torch.tensor([list(prompt_ids)], dtype=torch.long, device=self.device)
        out = self.model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
            do_sample=False, no_repeat_ngram_size=3,
            pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
        )
        return self.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


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
