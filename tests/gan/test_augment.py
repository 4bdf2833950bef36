"""DiffAugment (against loop statements, gradients to G, p = 0) and ADA's adaptive probability."""

import json

import pytest
import torch

from hubtune.errors import ConfigError
from hubtune.gan.augment import (
    AdaptiveAugmentProbability,
    AugmentParams,
    DiffAugment,
    adjust_brightness,
    adjust_contrast,
    adjust_saturation,
    cutout,
    translate,
)
from hubtune.gan.stylegan2 import PathLengthPenalty, build_stylegan2
from hubtune.losses.adaptive_mix import AdaptiveMix

TINY = dict(latent_dim=16, w_dim=16, mapping_layers=2, channel_base=256, channel_max=16, mbstd_group=4)


def test_translation_against_loops():
    torch.manual_seed(0)
    x = torch.randn(3, 2, 5, 6, dtype=torch.float64)
    dy, dx = torch.tensor([1, -2, 0]), torch.tensor([-1, 0, 3])
    got = translate(x, dy, dx)
    want = torch.zeros_like(x)
    for b in range(3):
        for i in range(5):
            for j in range(6):
                si, sj = i - int(dy[b]), j - int(dx[b])
                if 0 <= si < 5 and 0 <= sj < 6:
                    want[b, :, i, j] = x[b, :, si, sj]
    assert torch.equal(got, want)


def test_cutout_against_loops():
    torch.manual_seed(0)
    x = torch.randn(3, 2, 6, 6, dtype=torch.float64)
    cy, cx = torch.tensor([0, 3, 5]), torch.tensor([2, 5, 0])
    got = cutout(x, cy, cx, (3, 4))
    want = x.clone()
    for b in range(3):
        for i in range(6):
            for j in range(6):
                if int(cy[b]) - 1 <= i < int(cy[b]) + 2 and int(cx[b]) - 2 <= j < int(cx[b]) + 2:
                    want[b, :, i, j] = 0
    assert torch.equal(got, want)


def test_colour_transforms_against_loops():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    v = torch.tensor([0.3, 1.7], dtype=torch.float64)
    bright, sat, con = adjust_brightness(x, v), adjust_saturation(x, v), adjust_contrast(x, v)
    for b in range(2):
        assert torch.allclose(bright[b], x[b] + v[b])
        for i in range(4):
            for j in range(4):
                m = sum(x[b, c, i, j] for c in range(3)) / 3
                for c in range(3):
                    assert torch.isclose(sat[b, c, i, j], (x[b, c, i, j] - m) * v[b] + m)
        m = x[b].sum() / x[b].numel()
        assert torch.allclose(con[b], (x[b] - m) * v[b] + m)


def _params(b, **over):
    base = dict(
        brightness=torch.zeros(b), saturation=torch.ones(b), contrast=torch.ones(b),
        dy=torch.zeros(b, dtype=torch.long), dx=torch.zeros(b, dtype=torch.long),
        center_y=torch.zeros(b, dtype=torch.long), center_x=torch.zeros(b, dtype=torch.long),
        **{f"apply_{n}": torch.zeros(b, dtype=torch.bool) for n in ("brightness", "saturation", "contrast",
                                                                      "translation", "cutout")},
    )
    base.update(over)
    return AugmentParams(**base)


def test_diffaugment_with_fixed_params_composes_the_transforms_per_sample():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)
    aug = DiffAugment("color,translation,cutout")
    params = _params(2, brightness=torch.tensor([0.2, -0.4]), dy=torch.tensor([1, 0]), dx=torch.tensor([0, -1]),
                     center_y=torch.tensor([4, 4]), center_x=torch.tensor([4, 1]),
                     apply_brightness=torch.tensor([True, False]), apply_translation=torch.tensor([True, True]),
                     apply_cutout=torch.tensor([False, True]))
    got = aug(x, params)
    want0 = translate(x[:1] + 0.2, torch.tensor([1]), torch.tensor([0]))
    want1 = cutout(translate(x[1:], torch.tensor([0]), torch.tensor([-1])), torch.tensor([4]), torch.tensor([1]), (4, 4))
    assert torch.allclose(got[:1], want0) and torch.equal(got[1:], want1)
    assert aug.cutout_size(8, 8) == (4, 4)
    drawn = aug.sample_params(torch.zeros(64, 3, 32, 32))
    assert drawn.dy.abs().max() <= 4 and drawn.dx.abs().max() <= 4 and drawn.dy.abs().max() > 0
    assert drawn.center_y.min() >= 0 and drawn.center_y.max() < 32


def test_p_zero_is_identity_and_samples_get_their_own_parameters():
    x = torch.randn(8, 3, 16, 16)
    assert DiffAugment(p=0.0)(x) is x
    assert DiffAugment("", p=1.0)(x) is x
    out = DiffAugment("color", p=1.0)(torch.zeros(8, 3, 16, 16))
    per_sample = out.flatten(1).mean(1)
    assert len(set(per_sample.tolist())) == 8, "each sample draws its own brightness"
    with pytest.raises(ConfigError, match="unknown"):
        DiffAugment("color,flip")
    with pytest.raises(ConfigError, match="probability"):
        DiffAugment(p=1.5)


def test_gradients_flow_through_augmentation_to_the_generator():
    torch.manual_seed(0)
    g, d = build_stylegan2(32, 3, **TINY)
    aug = DiffAugment("color,translation,cutout", p=1.0)
    fake = g(torch.randn(4, 16))
    d(aug(fake)).mean().backward()
    grads = {n: p.grad for n, p in g.named_parameters() if p.grad is not None}
    assert g.mapping.layers[0].weight.grad.abs().sum() > 0 and g.synthesis.torgbs[-1].weight.grad.abs().sum() > 0
    assert all(torch.isfinite(gr).all() for gr in grads.values())


def test_augmentation_then_adaptive_mix_step_with_lazy_r1_and_path_length():
    """The loop's composition: augment reals and fakes with the same DiffAugment, then AdaptiveMix on the augmented
    batches; R1 w.r.t. the un-augmented reals; path length on G. One D and one G step stay finite."""
    torch.manual_seed(0)
    g, d = build_stylegan2(32, 3, **TINY)
    aug, amix, pl = DiffAugment(p=0.5), AdaptiveMix(), PathLengthPenalty()
    reals = torch.randn(8, 3, 32, 32).requires_grad_(True)
    with torch.no_grad():
        fakes = g(torch.randn(8, 16))
    out_r, out_f = amix(d, aug(reals)), amix(d, aug(fakes))
    (r1_grad,) = torch.autograd.grad(out_r.logits.sum(), reals, create_graph=True)
    loss_d = (torch.nn.functional.softplus(-out_r.logits).mean() + torch.nn.functional.softplus(out_f.logits).mean()
              + out_r.loss + out_f.loss + 0.5 * 16 * r1_grad.pow(2).flatten(1).sum(1).mean())
    loss_d.backward()
    assert out_r.feature_passes == 3 and torch.isfinite(loss_d)
    images, ws = g(torch.randn(4, 16), return_ws=True)
    loss_g = torch.nn.functional.softplus(-d(aug(images))).mean() + 2 * 4 * pl(images, ws)
    loss_g.backward()
    assert torch.isfinite(loss_g) and g.synthesis.convs[0].weight.grad.abs().sum() > 0


def test_ada_probability_rises_falls_and_clamps():
    ada = AdaptiveAugmentProbability(target=0.6, interval=4, ada_kimg=500)
    step = 64 * 4 / 500_000
    for i in range(4):
        ada.observe(torch.ones(64))  # D is sure on every real: r_t = 1 > 0.6
        p = ada.step(64)
        assert p == (0.0 if i < 3 else step)
    assert ada.last_rt == 1.0
    for _ in range(8):
        ada.observe(-torch.ones(64))  # r_t = -1: p falls, clamped at 0
        ada.step(64)
    assert ada.p == 0.0 and ada.last_rt == -1.0
    high = AdaptiveAugmentProbability(interval=1, ada_kimg=0.001, p=0.99)
    high.observe(torch.ones(8))
    assert high.step(8) == 1.0
    assert AdaptiveAugmentProbability().update(0.6, 64) == 0.0, "no move exactly at the target"
    mixed = AdaptiveAugmentProbability(interval=2, ada_kimg=1)
    mixed.observe(torch.tensor([1.0, 1.0, -1.0, 1.0]))
    mixed.step(4)
    mixed.observe(torch.tensor([1.0, 1.0, 1.0, 1.0]))
    assert mixed.step(4) == pytest.approx(8 / 1000) and mixed.last_rt == 0.75


def test_ada_reduce_sums_over_processes():
    ada = AdaptiveAugmentProbability(interval=1, ada_kimg=1)
    seen = []

    def reduce(t):  # a second process saw only negative logits, twice as many
        seen.append(t.clone())
        return t + torch.tensor([-8.0, 8.0], dtype=t.dtype)

    ada.observe(torch.ones(4))
    ada.step(12, reduce=reduce)
    assert seen[0].tolist() == [4.0, 4.0] and ada.last_rt == pytest.approx(-4 / 12) and ada.p == 0.0


def test_ada_state_dict_round_trips_exactly_through_json():
    torch.manual_seed(0)
    logits = [torch.randn(16) + 1.5 for _ in range(30)]
    a = AdaptiveAugmentProbability(interval=4, ada_kimg=1)
    for t in logits[:10]:  # stop in the middle of an interval
        a.observe(t)
        a.step(16)
    state = json.loads(json.dumps(a.state_dict()))
    b = AdaptiveAugmentProbability()
    b.load_state_dict(state)
    assert b.state_dict() == a.state_dict()
    for t in logits[10:]:
        a.observe(t)
        b.observe(t)
        assert a.step(16) == b.step(16)
    assert 0 < a.p < 1 and a.state_dict() == b.state_dict()
    with pytest.raises(ConfigError):
        b.load_state_dict({"p": 0.1})
