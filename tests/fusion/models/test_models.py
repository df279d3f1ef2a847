"""The contract every built-in model keeps, parametrised over the registry (a new built-in is covered
automatically): output shape and range, values at absent frames never reach the output, padding
never changes a valid frame, ``causal`` never looks ahead (or is a clear error), and it learns the
toy task, through a checkpoint that loads with weights_only and predicts the same again."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vafusion.errors import VafusionError
from vafusion.fusion.models import count_parameters, resolve_model
from vafusion.fusion.runs import checkpoint as ckpt_mod
from vafusion.fusion.runs.checkpoint import load_run
from vafusion.fusion.runs.config import make_config
from vafusion.fusion.runs.evaluate import evaluate_run
from vafusion.fusion.runs.train import train

from ..conftest import BUILTIN_MODELS, tiny_options

DIMS = [12, 8, 5]


def _batch(dims, B=3, W=40, seed=0, p_absent=0.2):
    g = torch.Generator().manual_seed(seed)
    streams = [torch.randn(B, W, d, generator=g) for d in dims]
    present = [torch.rand(B, W, generator=g) >= p_absent for _ in dims]
    for x, p in zip(streams, present):
        x[~p] = 0.0
    return streams, present, torch.ones(B, W, dtype=torch.bool)


def _model(name: str, dims=DIMS, **changes):
    """A built-in with tiny options; a closed-form one is fitted on random labelled data first."""
    spec = resolve_model(name)
    model = spec.build(dims, tiny_options(name, **changes), seed=0)
    if spec.closed_form:
        streams, present, _ = _batch(dims, B=4, W=60, seed=9)
        feats = [[s[b].numpy() for s in streams] for b in range(4)]
        pres = [[p[b].numpy() for p in present] for b in range(4)]
        labels = [np.tanh(f[0][:, :2]) for f in feats]
        model.fit(feats, pres, labels, seed=0)
    else:
        model.eval()
    return model


def _outputs(model, streams, present, valid) -> torch.Tensor:
    """(B, W, 2): ``forward`` of a module; a closed-form model predicts each row's valid frames as a video."""
    if isinstance(model, torch.nn.Module):
        with torch.no_grad():
            return model(streams, present, valid)
    out = torch.zeros(*valid.shape, 2)
    for b in range(valid.shape[0]):
        v = valid[b]
        pred = model.predict([[s[b][v].numpy() for s in streams]], [[p[b][v].numpy() for p in present]])[0]
        out[b, v] = torch.from_numpy(pred)
    return out


@pytest.mark.parametrize("name", BUILTIN_MODELS)
@pytest.mark.parametrize("dims", [[12], DIMS])
def test_shape_range_and_finite_gradients(name, dims):
    model = _model(name, dims)
    streams, present, valid = _batch(dims)
    present[-1][0] = False  # a sample without the last stream at all
    out = _outputs(model, streams, present, valid)
    assert out.shape == (3, 40, 2) and out.dtype == torch.float32
    assert torch.isfinite(out).all() and out.abs().max() <= 1.0
    if isinstance(model, torch.nn.Module):
        model.train()
        model(streams, present, valid).sum().backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
        assert count_parameters(model) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", BUILTIN_MODELS)
def test_values_at_absent_frames_never_change_the_output(name):
    model = _model(name)
    streams, present, valid = _batch(DIMS, p_absent=0.3)
    present[1][1] = False  # one sample without the first audio stream at all
    ref = _outputs(model, streams, present, valid)
    garbage = [x.clone() for x in streams]
    for x, p in zip(garbage, present):
        x[~p] = torch.randn_like(x[~p]) * 100
    garbage[0][0, ~present[0][0]] = float("nan")  # even NaN where the face is missing
    assert torch.equal(_outputs(model, garbage, present, valid), ref)


@pytest.mark.parametrize("name", BUILTIN_MODELS)
def test_padding_never_changes_valid_frames(name):
    model = _model(name)
    streams, present, valid = _batch(DIMS, B=2, W=30)
    longer = [torch.cat([x, torch.randn(2, 10, x.shape[2])], dim=1) for x in streams]
    longer_present = [torch.cat([p, torch.rand(2, 10) > 0.5], dim=1) for p in present]  # whatever it says there
    longer_valid = torch.cat([valid, torch.zeros(2, 10, dtype=torch.bool)], dim=1)
    a = _outputs(model, streams, present, valid)
    b = _outputs(model, longer, longer_present, longer_valid)
    assert torch.isfinite(b).all()
    torch.testing.assert_close(b[:, :30], a, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", BUILTIN_MODELS)
def test_causal_never_looks_ahead_or_is_a_clear_error(name):
    spec = resolve_model(name)
    if not spec.can_be_causal:
        with pytest.raises(VafusionError, match=f"model '{name}' cannot run causally"):
            make_config(model=name, causal=True)
        return
    streams, present, valid = _batch(DIMS, W=60)
    cut = 35
    future = [x.clone() for x in streams]
    future_present = [p.clone() for p in present]
    for x, p in zip(future, future_present):
        x[:, cut:] = torch.randn_like(x[:, cut:]) * 3
        p[:, cut:] = ~p[:, cut:]
    for causal in (True, False):  # the non-causal model does look ahead: the perturbation is seen
        model = _model(name, causal=causal)
        a = _outputs(model, streams, present, valid)
        b = _outputs(model, future, future_present, valid)
        assert torch.allclose(a[:, :cut], b[:, :cut], atol=1e-6) == causal, causal
        assert not torch.allclose(a[:, cut:], b[:, cut:], atol=1e-3)


FAST = dict(features=("visual", "audio"), window=48, hop=32, epochs=8, batch_size=4, patience=10, lr=3e-3)


@pytest.mark.parametrize("name", BUILTIN_MODELS)
def test_learns_the_toy_task_and_round_trips_through_its_checkpoint(name, toy_cache, tmp_path):
    config = make_config(model=name, **FAST, **tiny_options(name, dropout=0.1))
    result = train(toy_cache, tmp_path / "run", config, progress=False)
    assert result.best["p"] > 0.6, result.best  # visual carries valence, audio arousal; chance is 0
    ckpt = torch.load(tmp_path / "run" / ckpt_mod.BEST, weights_only=True)  # no pickle
    assert json.loads(ckpt["config"])["model"] == {
        "name": name,
        "options": json.loads(json.dumps(config.model.options)),
    }
    run = load_run(tmp_path / "run")
    assert type(run.model) is resolve_model(name).cls
    assert evaluate_run(tmp_path / "run", device="cpu")["p"] == pytest.approx(result.best["p"], abs=1e-6)
