"""The building blocks and properties of single built-ins: TCN, attention, weight norm, seeding, imf learning
the synthetic mapping with and without audio, late fusion's weights.

The contract every built-in keeps (absent frames, causality, padding, checkpoints, learning
the toy task) is tested once for all of them in test_models.py.
"""

from __future__ import annotations

import pytest
import torch

from vafusion.fusion.models import count_parameters, resolve_model
from vafusion.fusion.models.imf import IMF
from vafusion.fusion.models.layers import (
    TCN,
    CrossModalAttention,
    attention_mask,
    distance_bias,
    distance_slopes,
    key_mask,
    masked_attention,
)

TINY = dict(d_model=16, heads=4, tcn_kernel=3, tcn_dilations=(1, 2), head_hidden=16, dropout=0.1)
IMF_SPEC = resolve_model("imf")


def build_model(dims, seed: int = 0, **changes) -> IMF:
    return IMF_SPEC.build(dims, {**TINY, **changes}, seed)


def _batch(dims, B=3, W=40, seed=0, p_absent=0.2):
    g = torch.Generator().manual_seed(seed)
    streams = [torch.randn(B, W, d, generator=g) for d in dims]
    present = [torch.rand(B, W, generator=g) >= p_absent for _ in dims]
    valid = torch.ones(B, W, dtype=torch.bool)
    for x, p in zip(streams, present):
        x[~p] = 0.0
    return streams, present, valid


def _model(dims, **changes) -> IMF:
    return build_model(dims, **changes).eval()


@pytest.mark.parametrize("dims", [[12], [12, 8], [12, 8, 5]])
def test_shapes_and_range(dims):
    model = _model(dims)
    streams, present, valid = _batch(dims)
    out = model(streams, present, valid)
    assert out.shape == (3, 40, 2) and out.dtype == torch.float32
    assert torch.isfinite(out).all() and out.abs().max() <= 1.0
    model.train()
    out = model(streams, present, valid)
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert len(model.cross) == len(dims) - 1


def test_single_audio_stream_runs_unimodal():
    model = build_model([8]).eval()
    streams, present, valid = _batch([8])
    assert model(streams, present, valid).shape == (3, 40, 2)


def test_weight_norm_uses_parametrizations():
    keys = list(_model([12, 8]).state_dict())
    assert any("parametrizations" in k for k in keys)
    assert any(k.endswith("parametrizations.weight.original0") for k in keys)  # g
    assert any(k.endswith("parametrizations.weight.original1") for k in keys)  # v


def test_tcn_causal_receptive_field():
    tcn = TCN(4, 6, kernel=3, dilations=(1, 2), causal=True).eval()
    x = torch.randn(2, 4, 30)
    y = tcn(x)
    x2 = x.clone()
    x2[..., 20] += 1.0
    changed = (tcn(x2) - y).abs().amax(dim=(0, 1)) > 0
    assert not changed[:20].any() and changed[20]
    assert tcn.receptive_field == 1 + 2 * 2 * 3
    assert TCN(4, 4, kernel=5).receptive_field == 1 + 2 * 4 * 15  # defaults: 121 frames


def test_missing_modality_sample_is_finite_and_flagged():
    dims = [12, 8, 5]
    model = _model(dims)
    streams, present, valid = _batch(dims)
    present[1][0] = False  # sample 0 has no vggish at all
    present[2][0] = False  # ... and no logmel
    streams[1][0] = 0.0
    streams[2][0] = 0.0
    model.train()
    out = model(streams, present, valid)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_attention_key_padding_and_empty_key_window():
    torch.manual_seed(0)
    for causal in (False, True):
        attn = CrossModalAttention(16, 4, dropout=0.0, causal=causal, distance_bias=True).eval()
        q = torch.randn(3, 20, 16)
        k = torch.randn(3, 20, 16)
        present = torch.rand(3, 20) > 0.4
        present[1] = False  # no key at all
        present[2, :8] = False  # in causal mode, queries 0..7 of sample 2 have no key
        present[2, 8] = True
        out, has_key = attn(q, k, present)
        assert torch.isfinite(out).all()
        assert not has_key[1].any()
        assert has_key[2, 8:].all() and has_key[2, :8].all() != causal
        # no key: the attention term is exactly zero, only the residual (query) remains
        torch.testing.assert_close(out[1], attn.norm(q[1]))
        k2 = k.clone()
        k2[~present] = torch.randn_like(k2[~present]) * 50
        assert torch.equal(attn(q, k2, present)[0], out)
        k3 = k.clone()
        k3[present] += 1.0
        assert not torch.allclose(attn(q, k3, present)[0][0], out[0])


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_attention_equals_the_reference_computation(causal, bias):
    """masked_attention (the kernel called directly, its mask built once) against nn.MultiheadAttention with
    the (B * heads, W, S) mask of attention_mask, as the models computed it before: fp32, within 1e-5, values
    and gradients, with masked keys, a sample without keys, one without any mask, causal and not."""
    torch.manual_seed(0)
    attn = torch.nn.MultiheadAttention(16, 4, batch_first=True)
    q, k = torch.randn(3, 20, 16, requires_grad=True), torch.randn(3, 25, 16, requires_grad=True)
    present = torch.rand(3, 25) > 0.4
    present[1] = False  # no key at all
    present[2, :8] = False  # causally, queries 0..7 of sample 2 have none
    present[0] = True  # no mask at all
    slopes = distance_slopes(4) if bias else None
    mask, has_key = attention_mask(q, present, 4, causal, slopes)
    ref = attn(q, k, k, attn_mask=mask, need_weights=False)[0] * has_key[..., None]
    masks = key_mask(present, 20, causal, q.dtype, slopes)
    out = masked_attention(attn, q, k, masks)
    assert torch.equal(masks[1], has_key)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    weights = [q, k, attn.in_proj_weight, attn.out_proj.weight]
    grads = torch.autograd.grad(out.square().sum(), weights)
    ref_grads = torch.autograd.grad(ref.square().sum(), weights)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-5)
    assert torch.isfinite(out).all() and not out[1].any()  # no key: exactly zero


def test_the_distance_bias_is_built_once_per_shape():
    slopes = distance_slopes(2)
    first = distance_bias(slopes, 5, 7, torch.float32)
    assert distance_bias(slopes, 5, 7, torch.float32) is first  # kept: no step builds it again
    assert first.shape == (2, 5, 7) and first[1, 4, 0] == -4 / 4
    assert distance_bias(slopes, 5, 7, torch.bfloat16).dtype == torch.bfloat16


def test_deterministic_with_fixed_seed():
    dims = [12, 8, 5]
    m1, m2 = build_model(dims, seed=3), build_model(dims, seed=3)
    for (k1, v1), (k2, v2) in zip(m1.state_dict().items(), m2.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    other = build_model(dims, seed=4)
    assert not torch.equal(other.head[0].weight, m1.head[0].weight)
    streams, present, valid = _batch(dims)
    torch.manual_seed(11)
    state = torch.get_rng_state()
    a = m1.train()(streams, present, valid)  # dropout on
    torch.set_rng_state(state)
    b = m2.train()(streams, present, valid)
    assert torch.equal(a, b)
    # building a model does not consume the global random stream
    torch.manual_seed(5)
    build_model(dims, seed=3)
    after_build = torch.rand(1)
    torch.manual_seed(5)
    assert torch.equal(torch.rand(1), after_build)


def test_parameter_count_is_light_at_defaults():
    n = count_parameters(IMF_SPEC.build([512, 128, 64], {}))
    assert 100_000 < n < 3_000_000


# ---------------------------------------------------------------------- learning


def _ccc(x: torch.Tensor, y: torch.Tensor) -> float:
    x, y = x.double().flatten(), y.double().flatten()
    mx, my = x.mean(), y.mean()
    vx, vy = ((x - mx) ** 2).mean(), ((y - my) ** 2).mean()
    cov = ((x - mx) * (y - my)).mean()
    return float(2 * cov / (vx + vy + (mx - my) ** 2))


def _task(B, W, seed):
    """valence = tanh(visual feature 0), arousal = tanh(audio feature 0), frame by frame."""
    g = torch.Generator().manual_seed(seed)
    visual = torch.randn(B, W, 6, generator=g)
    audio = torch.randn(B, W, 4, generator=g)
    labels = torch.stack([torch.tanh(visual[..., 0]), torch.tanh(audio[..., 0])], dim=-1)
    ones = torch.ones(B, W, dtype=torch.bool)
    return [visual, audio], [ones, ones.clone()], ones, labels


def _fit(streams_used: int, steps: int = 250) -> tuple[float, float]:
    torch.manual_seed(0)
    streams, present, valid, labels = _task(8, 48, seed=1)
    dims = [x.shape[-1] for x in streams][:streams_used]
    model = build_model(dims, dropout=0.0, d_model=32)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        loss = (model(streams[:streams_used], present[:streams_used], valid) - labels).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    streams, present, valid, labels = _task(8, 48, seed=2)  # fresh data: learned the mapping, not the samples
    with torch.no_grad():
        pred = model.eval()(streams[:streams_used], present[:streams_used], valid)
    return _ccc(pred[..., 0], labels[..., 0]), _ccc(pred[..., 1], labels[..., 1])


def test_fusion_learns_a_simple_mapping_and_beats_visual_only():
    fused = _fit(2)
    visual_only = _fit(1)
    assert fused[0] > 0.9 and fused[1] > 0.9, fused
    assert visual_only[0] > 0.9, visual_only  # the visual part is learnable alone
    assert visual_only[1] < 0.3, visual_only  # arousal needs the audio
    assert fused[1] > visual_only[1] + 0.5
    assert sum(fused) > sum(visual_only)


def test_late_fusion_gives_an_absent_stream_no_weight():
    late = resolve_model("late").build([12, 8], {"d_model": 8, "tcn_kernel": 3, "tcn_dilations": (1,)}, 0).eval()
    streams, present, valid = _batch([12, 8], B=2, W=30)
    present[0][:] = True
    present[1][:] = True
    present[1][:, 10:20] = False  # no audio in the middle
    other_audio = [streams[0], torch.randn_like(streams[1]) * 5]  # every audio value different
    a, b = late(streams, present, valid), late(other_audio, present, valid)
    assert torch.equal(a[:, 10:20], b[:, 10:20])  # where the audio is absent the visual stream alone decides
    assert not torch.allclose(a[:, :10], b[:, :10], atol=1e-3)  # elsewhere the audio counts
