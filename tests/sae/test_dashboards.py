"""course_lib.sae.dashboards on hand-made codes with known answers: density, top contexts, latents for a token."""

from __future__ import annotations

import numpy as np
import torch

from course_lib import sae
from course_lib.sae.dashboards import Codes


def _codes() -> Codes:
    """4 token rows, k = 2 of 5 latents. Latent 0 fires on rows 0, 1, 3; latent 3 on rows 0 and 2 only."""
    vals = torch.tensor([[2.0, 1.0], [3.0, 0.0], [0.5, 4.0], [1.0, 0.0]])
    idx = torch.tensor([[0, 3], [0, 1], [3, 2], [0, 4]], dtype=torch.int32)  # latent 1 and 4: value 0, not firing
    where = torch.tensor([[0, 1], [0, 2], [1, 1], [1, 2]], dtype=torch.int32)  # (window, position)
    tokens = torch.tensor([[9, 7, 8], [9, 8, 7]])  # rows -> tokens 7, 8, 8, 7
    return Codes(vals, idx, where, tokens, n_latents=5)


def test_latent_density():
    c = _codes()
    assert np.allclose(c.density(), [3 / 4, 0.0, 1 / 4, 2 / 4, 0.0])  # firing = value > 0
    rows, acts = c.latent(3)
    assert rows.tolist() == [0, 2] and acts.tolist() == [1.0, 0.5]


def test_top_contexts_in_order():
    c = _codes()
    assert sae.dashboards.top_examples(c, 0, n=2) == [(1, 3.0), (0, 2.0)]
    assert sae.dashboards.top_examples(c, 0) == [(1, 3.0), (0, 2.0), (3, 1.0)]
    assert sae.dashboards.top_examples(c, 4) == []  # never fires
    assert sae.dashboards.latent_activation_map(c, 3) == {(0, 1): 1.0, (1, 1): 0.5}


def test_latents_for_a_token():
    c = _codes()
    assert c.token_of_row.tolist() == [7, 8, 8, 7]
    # token 7 (rows 0, 3): latent 0 mean (2 + 1) / 2 = 1.5, latent 3 mean 1 / 2 = 0.5
    assert sae.dashboards.latents_for_token(c, 7) == [(0, 1.5), (3, 0.5)]
    # token 8 (rows 1, 2): latent 2 mean 4 / 2, latent 0 mean 3 / 2, latent 3 mean 0.5 / 2
    assert sae.dashboards.latents_for_token(c, 8) == [(2, 2.0), (0, 1.5), (3, 0.25)]
    assert sae.dashboards.latents_for_token(c, 123) == []


def test_encode_store_matches_the_sae(tmp_path):
    m = sae.SparseAutoencoder(sae.SAEConfig(d_in=6, n_latents=10, k=3), torch.Generator().manual_seed(0))
    x = torch.randn(40, 6, generator=torch.Generator().manual_seed(1))
    store = sae.write_store(tmp_path / "s", x, shard_tokens=16)
    codes = sae.dashboards.encode_store(m, store, batch_size=7, progress=False)
    dense = m.encode(x).detach()
    assert np.allclose(codes.density(), (dense > 0).double().mean(0).numpy())
    for latent in range(10):
        rows, acts = codes.latent(latent)
        assert rows.tolist() == torch.nonzero(dense[:, latent] > 0).flatten().tolist()
        assert torch.allclose(acts, dense[rows, latent], atol=1e-6)


def test_token_purity_and_next_token_hits_on_hand_built_codes():
    import torch

    from course_lib.sae import dashboards
    from course_lib.sae.model import SAEConfig, SparseAutoencoder

    # 2 windows of 4 tokens; latent 3 fires on rows 0, 1, 2 (tokens 7, 7, 9) with activations 3 > 2 > 1
    tokens = torch.tensor([[7, 5, 7, 9], [9, 6, 1, 2]])
    where = torch.tensor([[0, 0], [0, 2], [1, 0], [0, 1]], dtype=torch.int32)
    idx = torch.tensor([[3], [3], [3], [1]], dtype=torch.int32)
    vals = torch.tensor([[3.0], [2.0], [1.0], [5.0]])
    codes = dashboards.Codes(vals, idx, where, tokens, n_latents=4)
    assert dashboards.token_purity(codes, 3, n=3) == (7, 2 / 3, 3)
    assert dashboards.token_purity(codes, 3, n=1) == (7, 1.0, 1)
    assert dashboards.token_purity(codes, 2)[2] == 0  # never fires
    # a decoder row whose unembedding promotes token 5 most: the next tokens after rows 0, 1, 2 are 5, 9, 6
    ae = SparseAutoencoder(SAEConfig(d_in=10, n_latents=4, k=1))
    w_u = torch.eye(10)
    with torch.no_grad():
        ae.W_dec[3] = torch.nn.functional.one_hot(torch.tensor(5), 10).float()
    share, m = dashboards.next_token_hits(codes, ae, w_u, 3, n=3, top=1)
    assert (share, m) == (1 / 3, 3)


class _WordTokenizer:
    """A tokenizer whose ids index a fixed word list (decode joins them), enough for the prose checks."""

    def __init__(self, words: list[str]):
        self.words = words

    def decode(self, ids) -> str:
        return "".join(self.words[int(i)] for i in ids)


def test_prose_share_content_words_and_theme_latent():
    from course_lib.sae import dashboards

    words = ["<bos>", " And", " the", " evening", " and", " morning", " were", " day", "(", "x", ")", " night", " of"]
    tok = _WordTokenizer(words)
    # window 0 is prose, window 1 is code; latent 1 fires on the time words of window 0, latent 2 on ")" in
    # window 1, latent 3 on " of" in window 0 only (one function word)
    tokens = torch.tensor([[0, 1, 2, 3, 4, 2, 5, 6, 7, 4, 11, 12],
                           [0, 8, 9, 10, 8, 9, 10, 8, 9, 10, 8, 9]])
    where = torch.tensor([[0, 3], [0, 5], [0, 6], [0, 10], [1, 3], [1, 6], [1, 9], [0, 11], [0, 1]], dtype=torch.int32)
    idx = torch.tensor([[1], [1], [1], [1], [2], [2], [2], [3], [1]], dtype=torch.int32)
    vals = torch.tensor([[4.0], [3.0], [2.5], [2.0], [3.0], [2.0], [1.0], [1.0], [0.5]])
    codes = Codes(vals, idx, where, tokens, n_latents=4)
    # latent 1's contexts: 3 prose contexts with enough letters before them; the one at position 1 (nothing before)
    # and the one at position 3 (" And the" has 6 letters) do not count
    assert dashboards.prose_share(codes, tok, 1, n=5) == 3 / 5
    assert dashboards.prose_share(codes, tok, 2, n=5) == 0.0  # code
    assert np.isnan(dashboards.prose_share(codes, tok, 0))  # dead
    assert dashboards.content_words(codes, tok, 1, n=5) == ["evening", "morning", "night"]  # not " the", " And"
    assert dashboards.content_words(codes, tok, 3) == []  # " of": a function word
    assert dashboards.theme_latent(codes, tok, [2, 3, 1], n=5, min_prose=0.5) == 1
    assert dashboards.theme_latent(codes, tok, [2, 3, 1], n=5, min_prose=0.9) is None  # not prose enough
    assert dashboards.theme_latent(codes, tok, [1], n=2, min_prose=0.0) is None  # fewer than 3 content words
