"""course_lib.toy.exercises: the checkers accept the reference and name the mistake in known wrong answers."""

from __future__ import annotations

import pytest
import torch

from course_lib import toy
from course_lib.toy import exercises as ex


def not_done(*args):
    raise NotImplementedError

def test_references_pass_and_stubs_are_not_attempted():
    assert "correct" in ex.check_generate_batch(toy.generate_batch)
    assert "correct" in ex.check_dimensions_per_feature(lambda W: toy.dimensions_per_feature(W, clip=False))
    assert "correct" in ex.check_feature_dimensionality(toy.feature_dimensionality)

    def topk(W, k):
        return W * toy.model.weight_sparsity.topk_mask(W, k, instance_dim=0)

    assert "correct" in ex.check_topk_per_instance(topk)
    for check in (ex.check_generate_batch, ex.check_dimensions_per_feature, ex.check_feature_dimensionality,
                  ex.check_topk_per_instance):
        assert check(not_done) == ex.NOT_ATTEMPTED

def test_generate_batch_mistakes():
    with pytest.raises(ex.ExerciseError, match="shape"):
        ex.check_generate_batch(lambda p, n, b, g: torch.rand(b, n, generator=g))
    with pytest.raises(ex.ExerciseError, match="probability"):
        ex.check_generate_batch(lambda p, n, b, g: torch.rand(len(p), b, n, generator=g))

    def same_draw(p, n, b, g):  # presence and value from one draw, not rescaled: values too small
        v = torch.rand(len(p), b, n, generator=g)
        return v * (v < p.view(-1, 1, 1))

    with pytest.raises(ex.ExerciseError, match="uniform"):
        ex.check_generate_batch(same_draw)

@pytest.mark.parametrize(
    "wrong, hint",
    [
        (lambda W: W.shape[1] / W.pow(2).sum(dim=(1, 2)).sqrt(), "square"),
        (lambda W: W.shape[2] / W.pow(2).sum(dim=(1, 2)), "n_features"),
        (lambda W: W.pow(2).sum(dim=(1, 2)) / W.shape[1], "inverse"),
        (lambda W: W.pow(2).sum(dim=(1, 2)), "wrong values"),
        (lambda W: W.pow(2).sum(), "shape"),
    ],
)
def test_dimensions_per_feature_mistakes(wrong, hint):
    with pytest.raises(ex.ExerciseError, match=hint):
        ex.check_dimensions_per_feature(wrong)

def test_feature_dimensionality_mistakes():
    def unnormalised(W):
        g = torch.bmm(W.transpose(1, 2), W)
        return W.pow(2).sum(1) / g.pow(2).sum(-1)

    with pytest.raises(ex.ExerciseError, match="unit vector"):
        ex.check_feature_dimensionality(unnormalised)

def test_topk_mistakes():
    def global_topk(W, k):
        flat = W.flatten()
        mask = torch.zeros_like(flat)
        mask[flat.abs().topk(k).indices] = 1
        return W * mask.view_as(W)

    with pytest.raises(ex.ExerciseError, match="per instance"):
        ex.check_topk_per_instance(global_topk)

    def signed(W, k):
        f = W.flatten(1)
        return (f * torch.zeros_like(f).scatter_(1, f.topk(k, 1).indices, 1)).view_as(W)

    with pytest.raises(ex.ExerciseError, match="magnitudes"):
        ex.check_topk_per_instance(signed)


def test_feature_dimensionality_more_mistakes():
    def without_self(W):
        W_hat = W / W.norm(dim=1, keepdim=True)
        ov = torch.bmm(W_hat.transpose(1, 2), W)
        return W.pow(2).sum(1) / (ov.pow(2).sum(-1) - torch.diagonal(ov, dim1=1, dim2=2).pow(2))

    def not_squared(W):
        W_hat = W / W.norm(dim=1, keepdim=True)
        return W.pow(2).sum(1) / torch.bmm(W_hat.transpose(1, 2), W).sum(-1)

    with pytest.raises(ex.ExerciseError, match="g = f"):
        ex.check_feature_dimensionality(without_self)
    with pytest.raises(ex.ExerciseError, match="square the dot products"):
        ex.check_feature_dimensionality(not_squared)


def test_topk_keeps_wrong_count():
    def k_plus_one(W, k):
        return W * toy.model.weight_sparsity.topk_mask(W, k + 1, instance_dim=0)

    with pytest.raises(ex.ExerciseError, match="exactly k=5"):
        ex.check_topk_per_instance(k_plus_one)


def test_generate_batch_shared_presence():
    def together(p, n, b, g):  # one presence draw per sample, shared by all features
        present = torch.rand(len(p), b, 1, generator=g) < p.view(-1, 1, 1)
        return torch.rand(len(p), b, n, generator=g) * present

    with pytest.raises(ex.ExerciseError, match="together"):
        ex.check_generate_batch(together)


def test_toy_model_trains_on_a_given_data_generator():
    calls = []

    def data(p, n, b, g):
        calls.append((n, b))
        return toy.generate_batch(p, n, b, g)

    cfg = toy.ToyConfig(n_features=5, d_hidden=2, n_instances=2)
    model = toy.train_new(cfg, torch.tensor([1.0, 0.1]), toy.importances(5, 0.9, 2),
                          toy.ToyTrainConfig(steps=3, batch_size=8, lr=1e-2), data_fn=data)
    assert calls[:3] == [(5, 8)] * 3
    with pytest.raises(ValueError, match="abs"):
        toy.ToyModel(toy.ToyConfig(n_features=5, d_hidden=2, n_instances=1, kind="abs"), torch.tensor([1.0]),
                     toy.importances(5, 0.9, 1), data_fn=data)
    assert model.data_fn is data


@pytest.mark.parametrize("wrong, hint", [
    (lambda W: W.shape[1] / W.pow(2).sum().expand(W.shape[0]), "instance dimension"),
    (lambda W: toy.dimensions_per_feature(W, clip=True), "clipped"),
])
def test_dimensions_per_feature_more_mistakes(wrong, hint):
    with pytest.raises(ex.ExerciseError, match=hint):
        ex.check_dimensions_per_feature(wrong)


def test_feature_dimensionality_wrong_norm_dimension():
    def wrong_dim(W):
        return W.pow(2).sum(1) / torch.bmm((W / W.norm(dim=2, keepdim=True)).transpose(1, 2), W).pow(2).sum(-1)

    with pytest.raises(ex.ExerciseError, match="dim 1"):
        ex.check_feature_dimensionality(wrong_dim)


# --------------------------------------------------------------------------- exercise 2: forward pass and loss


def _forward(W, b, imp, x, relu=True, bias=True, swap=False, imp_power=1, batch="mean"):
    h = torch.bmm(x, W) if swap else torch.bmm(x, W.transpose(1, 2))
    out = torch.bmm(h, W.transpose(1, 2) if swap else W) + (b.unsqueeze(1) if bias else 0)
    x_hat = torch.relu(out) if relu else out
    per = ((x - x_hat).pow(2) * imp.pow(imp_power).unsqueeze(1)).sum(-1)
    return x_hat, per.mean(-1) if batch == "mean" else per.sum(-1)


def test_forward_and_loss_accepts_the_reference_and_a_stub_is_not_attempted():
    assert "correct" in ex.check_forward_and_loss(toy.forward_and_loss)
    assert "correct" in ex.check_forward_and_loss(_forward)
    assert ex.check_forward_and_loss(not_done) == ex.NOT_ATTEMPTED


@pytest.mark.parametrize("kwargs, hint", [
    ({"relu": False}, "missing the ReLU"),
    ({"bias": False}, "missing the bias"),
    ({"relu": False, "bias": False}, "missing both the ReLU and the bias"),
    ({"imp_power": 0}, "importance is not applied"),
    ({"imp_power": 2}, "importance is applied squared"),
    ({"batch": "sum"}, "summed over the batch"),
])
def test_forward_and_loss_names_each_mistake(kwargs, hint):
    with pytest.raises(ex.ExerciseError, match=hint):
        ex.check_forward_and_loss(lambda W, b, imp, x: _forward(W, b, imp, x, **kwargs))


def test_forward_and_loss_names_w_and_its_transpose_swapped():
    # m != n: the swap fails inside bmm, and the message says which side W^T goes on
    with pytest.raises(ex.ExerciseError, match="W or W\\^T"):
        ex.check_forward_and_loss(lambda W, b, imp, x: _forward(W, b, imp, x, swap=True))
    # m == n (the checker's second case): the swap runs and is recognised by its values

    def swap_when_square(W, b, imp, x):
        return _forward(W, b, imp, x, swap=W.shape[1] == W.shape[2])

    with pytest.raises(ex.ExerciseError, match="W and W\\^T are swapped"):
        ex.check_forward_and_loss(swap_when_square)


def test_forward_and_loss_shape_mistakes():
    with pytest.raises(ex.ExerciseError, match="one number per instance"):
        ex.check_forward_and_loss(lambda W, b, imp, x: (toy.forward_and_loss(W, b, imp, x)[0],
                                                        toy.forward_and_loss(W, b, imp, x)[1].sum()))
    with pytest.raises(ex.ExerciseError, match="two things"):
        ex.check_forward_and_loss(lambda W, b, imp, x: toy.forward_and_loss(W, b, imp, x)[1])
    with pytest.raises(ex.ExerciseError, match="averaged over the features"):
        ex.check_forward_and_loss(lambda W, b, imp, x: (
            toy.forward_and_loss(W, b, imp, x)[0],
            ((x - toy.forward_and_loss(W, b, imp, x)[0]).pow(2) * imp.unsqueeze(1)).mean(-1).mean(-1)))
