"""AdaptiveMix maths against plain float64 statements (loops), with fixed draws."""

import copy
import math

import pytest
import torch
from torch import nn

from hubtune.losses.adaptive_mix import (
    AdaptiveMix,
    AdaptiveMixClassifierLoss,
    MixDraws,
    features_are_batch_coupled,
    mix_pairs,
    sample_mix_coefficients,
    shrinkage_loss,
)


class CountingDiscriminator(nn.Module):
    """A small discriminator speaking the features/head protocol; counts feature passes."""

    def __init__(self, coupled_layer: nn.Module | None = None, dtype=torch.float64):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, 2, 1, dtype=dtype)
        self.coupled = coupled_layer if coupled_layer is not None else nn.Identity()
        self.fc = nn.Linear(4 * 4 * 4, 1, dtype=dtype)
        self.feature_samples = 0  # samples through features(): 2B for two passes over a batch of B

    def features(self, x):
        self.feature_samples += x.shape[0]
        return torch.tanh(self.coupled(self.conv(x))).flatten(1)

    def head(self, f):
        return self.fc(f)

    def forward(self, x, output="logits"):
        if output == "head":
            return self.head(x).reshape(-1)
        f = self.features(x)
        if output == "features":
            return f
        logits = self.head(f).reshape(-1)
        return (logits, f) if output == "both" else logits


class GroupStd(nn.Module):
    """Adds each group-of-2's std to every sample of that group: genuinely batch-coupled."""

    batch_coupled = True

    def forward(self, x):
        g = x.reshape(2, x.shape[0] // 2, *x.shape[1:])
        return x + g.std(dim=0, unbiased=False).mean().reshape(1)


def fixed_draws(batch, feat_dim, lam_values=None, seed=0):
    gen = torch.Generator().manual_seed(seed)
    lam = torch.tensor(lam_values, dtype=torch.float32) if lam_values is not None else torch.rand(batch, generator=gen)
    perm = torch.randperm(batch, generator=gen)
    noise = 0.05 * torch.randn(batch, feat_dim, generator=gen, dtype=torch.float32)
    return MixDraws(lam=lam, permutation=perm, noise=noise)


def cosine64(a, b):
    dot = sum(float(a[k]) * float(b[k]) for k in range(len(a)))
    na = math.sqrt(sum(float(v) ** 2 for v in a))
    nb = math.sqrt(sum(float(v) ** 2 for v in b))
    return dot / max(na * nb, 1e-8)


# ----------------------------------------------------------------------------------------- helpers


def test_mix_pairs_matches_loop_and_broadcasts():
    x = torch.randn(5, 2, 3, 3, dtype=torch.float64)
    lam = torch.tensor([0.1, 0.5, 0.9, 1.0, 0.0])
    perm = torch.tensor([3, 0, 4, 1, 2])
    out = mix_pairs(x, lam, perm)
    for i in range(5):
        expected = float(lam[i]) * x[i] + (1 - float(lam[i])) * x[int(perm[i])]
        assert torch.allclose(out[i], expected, atol=1e-12)
    with pytest.raises(ValueError, match="lam and permutation"):
        mix_pairs(x, lam[:3], perm[:3])


def test_sample_mix_coefficients_shapes_and_distribution():
    torch.manual_seed(0)
    lam, perm = sample_mix_coefficients(8, alpha=1.0)
    assert lam.shape == (8,) and torch.all(lam == lam[0]), "one lam per call is repeated over the batch"
    assert sorted(perm.tolist()) == list(range(8))
    lam_ps, _ = sample_mix_coefficients(8, alpha=1.0, per_sample=True)
    assert len(set(lam_ps.tolist())) == 8
    many, _ = sample_mix_coefficients(4000, alpha=50.0, per_sample=True)
    assert abs(many.mean().item() - 0.5) < 0.01 and many.std().item() < 0.06  # Beta(50, 50): std 0.0497
    small, _ = sample_mix_coefficients(4000, alpha=0.2, per_sample=True)
    assert ((small < 0.1) | (small > 0.9)).float().mean() > 0.5  # U-shaped
    assert torch.all((many > 0) & (many < 1))


@pytest.mark.parametrize("distance", ["cosine", "mse"])
def test_shrinkage_loss_against_float64(distance):
    torch.manual_seed(1)
    mixed = torch.randn(4, 6, requires_grad=True)
    target = torch.randn(4, 6, requires_grad=True)
    noise = 0.05 * torch.randn(4, 6)
    loss = shrinkage_loss(mixed, target, sigma=0.05, distance=distance, noise=noise)
    noisy = (target.detach() + noise).double()
    if distance == "cosine":
        expected = sum(1 - cosine64(mixed[i].detach().double(), noisy[i]) for i in range(4)) / 4
    else:
        expected = sum((float(mixed.detach()[i, k]) - float(noisy[i, k])) ** 2 for i in range(4) for k in range(6)) / 24
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    loss.backward()
    assert target.grad is None, "the target is detached (stop-gradient)"
    assert mixed.grad.abs().sum() > 0


def test_shrinkage_loss_noise_has_sigma_and_zero_sigma_is_exact():
    torch.manual_seed(0)
    f = torch.randn(3, 5)
    assert shrinkage_loss(f, f.clone(), sigma=0.0).item() == pytest.approx(0.0, abs=1e-6)
    # with MSE against itself, the loss is the noise's second moment: sigma^2
    big = torch.randn(64, 512)
    assert shrinkage_loss(big, big.clone(), sigma=0.3, distance="mse").item() == pytest.approx(0.09, rel=0.02)


# ----------------------------------------------------------------------------------------- GAN regulariser


def reference_statement(d, x, draws, sigma_noise, preset):
    """Float64 loop statement with three explicit passes: f(x), f(x[p]), f(x~)."""
    b = x.shape[0]
    with torch.no_grad():
        f = d.features(x)
        f_partner = d.features(x[draws.permutation])
        mixed_x = torch.stack([float(draws.lam[i]) * x[i] + (1 - float(draws.lam[i])) * x[int(draws.permutation[i])] for i in range(b)])
        f_mixed = d.features(mixed_x)
        losses, logits = [], []
        for i in range(b):
            lam = float(draws.lam[i])
            t = lam * f[i] + (1 - lam) * f_partner[i]
            losses.append(1 - cosine64(f_mixed[i], t + sigma_noise[i].double()))
            if preset == "reference":
                logits.append(float(d.head(t[None])[0, 0] + d.head(f_mixed[i][None])[0, 0]))
            else:
                logits.append(float(d.head(f[i][None])[0, 0]))
    return sum(losses) / b, torch.tensor(logits, dtype=torch.float64)


@pytest.mark.parametrize("preset", ["paper", "reference"])
def test_adaptive_mix_matches_float64_statement(preset):
    torch.manual_seed(2)
    d = CountingDiscriminator()
    x = torch.randn(6, 3, 8, 8, dtype=torch.float64)
    draws = fixed_draws(6, 64, lam_values=[0.3] * 6)
    ada = AdaptiveMix(weight=0.5, preset=preset)
    out = ada(d, x, draws)
    assert d.feature_samples == 12, "two passes: x and x~"
    expected_loss, expected_logits = reference_statement(d, x, draws, draws.noise, preset)
    assert out.feature_passes == 2
    assert out.shrinkage_loss.item() == pytest.approx(expected_loss, abs=1e-9)
    assert out.loss.item() == pytest.approx(0.5 * expected_loss, abs=1e-9)
    assert torch.allclose(out.logits.detach(), expected_logits, atol=1e-10)


@pytest.mark.parametrize("preset", ["paper", "reference"])
def test_two_pass_equals_three_pass_for_per_sample_discriminator(preset):
    torch.manual_seed(3)
    x = torch.randn(8, 3, 8, 8, dtype=torch.float64)
    draws = fixed_draws(8, 64, seed=3)  # per-sample lam
    results = {}
    for passes in (2, 3):
        torch.manual_seed(4)
        d = CountingDiscriminator()
        out = AdaptiveMix(preset=preset, per_sample=True, feature_passes=passes)(d, x, draws)
        (out.loss + out.logits.sum()).backward()
        assert d.feature_samples == passes * 8 and out.feature_passes == passes
        results[passes] = (out.loss.detach(), out.logits.detach(), [p.grad.clone() for p in d.parameters()])
    assert torch.allclose(results[2][0], results[3][0], atol=1e-12)
    assert torch.allclose(results[2][1], results[3][1], atol=1e-12)
    for g2, g3 in zip(results[2][2], results[3][2]):
        assert torch.allclose(g2, g3, atol=1e-10)


def test_batch_coupled_features_are_detected_and_get_the_third_pass():
    torch.manual_seed(5)
    plain = CountingDiscriminator()
    assert not features_are_batch_coupled(plain)
    assert features_are_batch_coupled(CountingDiscriminator(GroupStd()))

    x = torch.randn(8, 3, 8, 8, dtype=torch.float64)
    draws = fixed_draws(8, 64, seed=6)
    ada = AdaptiveMix()
    plain_out = ada(plain, x, draws)
    assert plain.feature_samples == 16 and plain_out.feature_passes == 2

    # where samples really interact, f(x)[p] != f(x[p]): auto mode gives the 3-pass (reference) value
    torch.manual_seed(7)
    coupled = CountingDiscriminator(GroupStd())
    auto = AdaptiveMix(feature_passes="auto")(coupled, x, draws).shrinkage_loss
    three = AdaptiveMix(feature_passes=3)(coupled, x, draws).shrinkage_loss
    two = AdaptiveMix(feature_passes=2)(coupled, x, draws).shrinkage_loss
    assert auto.item() == pytest.approx(three.item(), abs=1e-12)
    assert abs(two.item() - three.item()) > 1e-6


@pytest.mark.parametrize("track_running_stats", [True, False])
def test_batchnorm_in_training_mode_is_not_batch_coupled(track_running_stats):
    """A permutation of the same batch has the same batch statistics: f(x[p]) == f(x)[p], so two passes suffice."""
    torch.manual_seed(5)
    bn = CountingDiscriminator(nn.BatchNorm2d(4, track_running_stats=track_running_stats, dtype=torch.float64)).train()
    x = torch.randn(8, 3, 8, 8, dtype=torch.float64)
    perm = torch.randperm(8)
    f, f_permuted = bn.features(x), bn.features(x[perm])
    assert torch.allclose(f_permuted, f[perm], atol=1e-12, rtol=0)
    assert not features_are_batch_coupled(bn)
    bn.feature_samples = 0
    out = AdaptiveMix()(bn, x, fixed_draws(8, 64, seed=6))
    assert out.feature_passes == 2 and bn.feature_samples == 16
    # and the two-pass value equals the three-pass one
    three = AdaptiveMix(feature_passes=3)(bn, x, fixed_draws(8, 64, seed=6))
    assert out.shrinkage_loss.item() == pytest.approx(three.shrinkage_loss.item(), abs=1e-12)


def test_gradients_reach_discriminator_and_generator_only_in_reference_preset():
    torch.manual_seed(8)
    gen = nn.Linear(4, 3 * 8 * 8, dtype=torch.float64)
    z = torch.randn(6, 4, dtype=torch.float64)
    for preset, expect_generator_grad in (("paper", False), ("reference", True)):
        d = CountingDiscriminator()
        ada = AdaptiveMix(preset=preset, sigma=0.0)
        # discriminator step: the shrinkage term alone moves D's feature layers
        d.zero_grad()
        ada(d, torch.randn(6, 3, 8, 8, dtype=torch.float64)).loss.backward()
        assert d.conv.weight.grad is not None and d.conv.weight.grad.abs().sum() > 0
        # generator step: the term adds to G's gradient only in the reference preset
        gen.zero_grad()
        fakes = gen(z).view(6, 3, 8, 8)
        terms = ada.generator_terms(d, fakes)
        assert ada.applies_to_generator == expect_generator_grad
        if expect_generator_grad:
            terms.loss.backward()
            assert gen.weight.grad is not None and gen.weight.grad.abs().sum() > 0
        else:
            assert terms.loss.item() == 0.0 and terms.loss.grad_fn is None
            logits_plain = d(fakes)
            assert torch.allclose(terms.logits, logits_plain)


def test_adaptive_mix_bad_knobs():
    for kwargs, msg in [
        ({"alpha": 0}, "alpha"), ({"alpha": float("nan")}, "alpha"), ({"sigma": -1}, "sigma"),
        ({"distance": "l1"}, "distance"), ({"weight": -0.1}, "weight"), ({"preset": "default"}, "preset"),
        ({"feature_passes": 4}, "feature_passes"),
    ]:
        with pytest.raises(ValueError, match=msg):
            AdaptiveMix(**kwargs)
    with pytest.raises(ValueError, match="batch_size"):
        sample_mix_coefficients(0)
    with pytest.raises(ValueError, match="same shape"):
        shrinkage_loss(torch.randn(2, 3), torch.randn(2, 4))


# ----------------------------------------------------------------------------------------- classifier loss


def classifier_statement64(backbone, head, x, y, draws, preset, distance, clean_ce, weight):
    """The classifier loss written out in float64 with explicit loops, plus its gradients (autograd in float64).

    paper: mixup CE on W f(x~); reference (the public classifier script): mixup CE on W t + W f(x~), where
    t = lam f(x) + (1 - lam) f(x)[p] carries gradient; the shrinkage target is the detached t plus the noise.
    Returns (total, ce, shrinkage, gradients of the backbone's parameters, gradient w.r.t. x).
    """
    bb, hd = copy.deepcopy(backbone).double(), copy.deepcopy(head).double()
    x64 = x.detach().double().requires_grad_(True)
    b = x.shape[0]
    lam = [float(v) for v in draws.lam]
    p = [int(v) for v in draws.permutation]
    f = bb(x64)
    fm = bb(torch.stack([lam[i] * x64[i] + (1 - lam[i]) * x64[p[i]] for i in range(b)]))
    t = torch.stack([lam[i] * f[i] + (1 - lam[i]) * f[p[i]] for i in range(b)])
    z = hd(t) + hd(fm) if preset == "reference" else hd(fm)

    def nll(row, label):
        return torch.log(torch.exp(row).sum()) - row[label]

    ce = sum(lam[i] * nll(z[i], int(y[i])) + (1 - lam[i]) * nll(z[i], int(y[p[i]])) for i in range(b)) / b
    if clean_ce:
        logits = hd(f)
        ce = ce + sum(nll(logits[i], int(y[i])) for i in range(b)) / b
    shrink = 0.0
    for i in range(b):
        target = t[i].detach() + draws.noise[i].double()
        if distance == "cosine":
            shrink = shrink + 1 - (fm[i] * target).sum() / (fm[i].norm() * target.norm())
        else:
            shrink = shrink + ((fm[i] - target) ** 2).sum() / f.shape[1]
    shrink = shrink / b
    total = ce + weight * shrink
    total.backward()
    return (total.item(), ce.item(), float(shrink.detach()), [q.grad.clone() for q in bb.parameters()], x64.grad.clone())


@pytest.mark.parametrize("preset", ["paper", "reference"])
def test_classifier_loss_and_gradients_against_float64(preset):
    torch.manual_seed(9)
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(12, 5), nn.Tanh())
    head = nn.Linear(5, 3)
    x = torch.randn(6, 3, 2, 2, requires_grad=True)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    draws = fixed_draws(6, 5, seed=10)
    loss_fn = AdaptiveMixClassifierLoss(weight=0.7) if preset == "paper" else AdaptiveMixClassifierLoss.reference(weight=0.7)
    assert loss_fn.distance == ("cosine" if preset == "paper" else "mse")
    assert loss_fn.clean_ce == (preset == "paper")
    out = loss_fn(x, y, backbone, head, draws=draws)
    total, ce, shrink, grads, x_grad = classifier_statement64(
        backbone, head, x, y, draws, preset, loss_fn.distance, loss_fn.clean_ce, 0.7)
    assert out.loss.item() == pytest.approx(total, abs=1e-5)
    assert out.ce_loss.item() == pytest.approx(ce, abs=1e-5)
    assert out.shrinkage_loss.item() == pytest.approx(shrink, abs=1e-6)
    assert torch.allclose(out.logits, head(backbone(x)), atol=1e-6)
    out.loss.backward()
    for got, expected in zip(backbone.parameters(), grads):
        assert torch.allclose(got.grad.double(), expected, atol=1e-5), "feature network gradients"
    assert torch.allclose(x.grad.double(), x_grad, atol=1e-5), "input gradients"
    assert head.weight.grad.abs().sum() > 0


def test_classifier_reference_preset_clean_pass_carries_gradient():
    """In the reference preset the clean features feed the mixed logits W t: the clean pass has a graph."""
    torch.manual_seed(13)
    calls = []

    def features_fn(images):
        out = nn.functional.linear(images.flatten(1), weight)
        calls.append(out.requires_grad)
        return out

    weight = torch.randn(4, 12, requires_grad=True)
    head = nn.Linear(4, 3)
    out = AdaptiveMixClassifierLoss.reference()(torch.randn(6, 3, 2, 2), torch.tensor([0, 1, 2, 0, 1, 2]), features_fn,
                                                head, draws=fixed_draws(6, 4, seed=14))
    assert calls == [True, True], "both passes (clean and mixed) run with a graph"
    assert out.logits.requires_grad


def test_classifier_loss_float32_under_bf16_autocast():
    torch.manual_seed(11)
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(12, 8))
    head = nn.Linear(8, 4)
    x, y = torch.randn(8, 3, 2, 2), torch.randint(0, 4, (8,))
    draws = fixed_draws(8, 8, seed=12)
    loss_fn = AdaptiveMixClassifierLoss(per_sample=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = loss_fn(x, y, backbone, head, draws=draws)
    assert out.loss.dtype == torch.float32
    ref = loss_fn(x, y, backbone, head, draws=draws)
    assert out.loss.item() == pytest.approx(ref.loss.item(), rel=0.05)


def test_classifier_loss_bad_knobs_and_inputs():
    for kwargs, msg in [
        ({"alpha": -1}, "alpha"), ({"sigma": float("inf")}, "sigma"), ({"weight": float("nan")}, "weight"),
        ({"distance": "cos"}, "distance"), ({"preset": "default"}, "preset"), ({"clean_ce": "yes"}, "clean_ce"),
    ]:
        with pytest.raises(ValueError, match=msg):
            AdaptiveMixClassifierLoss(**kwargs)
    loss_fn = AdaptiveMixClassifierLoss()
    backbone, head = nn.Flatten(), nn.Linear(12, 3)
    with pytest.raises(ValueError, match="labels"):
        loss_fn(torch.randn(4, 3, 2, 2), torch.zeros(3, dtype=torch.long), backbone, head)
    with pytest.raises(ValueError, match="integer"):
        loss_fn(torch.randn(4, 3, 2, 2), torch.zeros(4), backbone, head)


@pytest.mark.parametrize("alpha", [0.2, 1.0, 50.0])
def test_symmetric_beta_sampler_has_the_beta_moments(alpha):
    # hubtune's draws are G1 / (G1 + G2), G ~ Gamma(alpha) (one graph under torch.compile); compare with Beta's moments
    from hubtune.losses._random import sample_symmetric_beta

    torch.manual_seed(0)
    draws = sample_symmetric_beta(alpha, (20000,))
    assert draws.dtype == torch.float32 and draws.shape == (20000,)
    assert bool(((draws >= 0) & (draws <= 1)).all())
    variance = 1.0 / (4 * (2 * alpha + 1))  # Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1))
    assert draws.mean().item() == pytest.approx(0.5, abs=0.01)
    assert draws.var().item() == pytest.approx(variance, rel=0.05)


def test_symmetric_beta_sampler_stays_finite_for_a_tiny_alpha():
    from hubtune.losses._random import sample_symmetric_beta

    torch.manual_seed(0)
    draws = sample_symmetric_beta(1e-3, (4000,))  # both Gamma draws underflow often: a fair coin on {0, 1} then
    assert bool(torch.isfinite(draws).all())
    assert bool(((draws >= 0) & (draws <= 1)).all())
    assert 0.4 < (draws > 0.5).float().mean().item() < 0.6
