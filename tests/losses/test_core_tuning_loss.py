"""CoreTuningLoss against an independent float64 statement of docs/methods.md section 1, plus edge cases.

The float64 implementation below uses plain Python loops and dense soft-label vectors and imports
nothing from hubtune's loss module, so a shared mistake is unlikely.
"""

import math

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from hubtune.losses import (
    CoreTuningDraws,
    CoreTuningLoss,
    build_hard_pair_rows,
    focal_supcon_loss,
    mine_hard_pairs,
    sample_core_tuning_draws,
    soft_label_cross_entropy,
)
from hubtune.errors import ConfigError
from hubtune.losses import core_tuning
from hubtune.losses.core_tuning import CoreTuningSettings
from hubtune.methods.core_tuning import CoreTuningConfig

TAU = 0.07
ETA = 0.1


# ----------------------------------------------------------------------------------------------------
# Independent float64 statement of the method


def _one_hot(c, num_classes):
    v = torch.zeros(num_classes, dtype=torch.float64)
    v[c] = 1.0
    return v


def _cos(a, b):
    return float(a @ b / (a.norm() * b.norm()))


def mine64(h, labels, preset):
    """hp, hn as Python lists, by loops over float64 cosines."""
    x = h.detach().double()
    y = [int(v) for v in labels]
    n = len(y)
    hp, hn = [], []
    for i in range(n):
        sims = [_cos(x[i], x[j]) for j in range(n)]
        if preset == "paper":
            same = [j for j in range(n) if j != i and y[j] == y[i]]
            other = [j for j in range(n) if y[j] != y[i]]
            hp.append(min(same, key=lambda j: sims[j]) if same else i)
            hn.append(max(other, key=lambda j: sims[j]) if other else i)
        else:
            pos = [sims[j] if (y[j] == y[i] and j != i) else 0.0 for j in range(n)]
            k = pos.index(min(pos))
            hp.append(i if k == 0 else k)
            neg = [sims[j] if y[j] != y[i] else 0.0 for j in range(n)]
            hn.append(neg.index(max(neg)))
    return hp, hn


def rows64(h, labels, draws, num_classes, preset):
    """The 3B rows (float64, carrying h's gradient) and their dense soft labels."""
    y = [int(v) for v in labels]
    n = len(y)
    perm = [int(v) for v in draws.permutation]
    lam = [float(v) for v in draws.lam]
    mu = [float(v) for v in draws.mu]
    hp, hn = mine64(h, labels, preset)
    rows, soft = [], []
    for i in range(n):
        rows.append(h[i].detach() if preset == "reference" else h[i])
        soft.append(_one_hot(y[i], num_classes))
    for i in range(n):
        rows.append((1 - lam[i]) * h[i] + lam[i] * h[perm[i]])
        soft.append((1 - lam[i]) * _one_hot(y[i], num_classes) + lam[i] * _one_hot(y[perm[i]], num_classes))
    for i in range(n):
        rows.append(mu[i] * h[hp[i]] + (1 - mu[i]) * h[hn[i]])
        soft.append(mu[i] * _one_hot(y[hp[i]], num_classes) + (1 - mu[i]) * _one_hot(y[hn[i]], num_classes))
    return rows, soft


def loss64(h, labels, draws, classifier, projector, preset, eta=ETA, tau=TAU):
    """(total, ce, contrastive, num_positive_pairs, num_anchors) in float64 from docs/methods.md's formulas."""
    w = classifier.weight.detach().double()
    b = classifier.bias.detach().double()
    w1 = projector[0].weight.detach().double()
    b1 = projector[0].bias.detach().double()
    w2 = projector[2].weight.detach().double()
    b2 = projector[2].bias.detach().double()
    num_classes = w.shape[0]
    rows, soft = rows64(h, labels, draws, num_classes, preset)
    n = len(rows)

    ce_terms = []
    for row, target in zip(rows, soft):
        logits = w @ row + b
        log_probs = logits - torch.log(torch.exp(logits).sum())
        ce_terms.append(-(target * log_probs).sum())
    ce = sum(ce_terms) / n

    z = []
    for row in rows:
        u = w2 @ torch.relu(w1 @ row + b1) + b2
        z.append(u / torch.sqrt((u * u).sum()))
    sim = [[z[i] @ z[j] / tau for j in range(n)] for i in range(n)]
    anchor_losses, num_pairs = [], 0
    for i in range(n):
        positives = [j for j in range(n) if j != i and float((soft[i] - soft[j]).abs().max()) < 1e-9]
        if not positives:
            continue
        num_pairs += len(positives)
        log_norm = torch.log(sum(torch.exp(sim[i][k]) for k in range(n) if k != i))
        total = 0.0
        for j in positives:
            log_p = sim[i][j] - log_norm
            total = total + (1 - torch.exp(log_p)) * log_p
        divisor = len(positives) if preset == "paper" else n
        anchor_losses.append(-total / divisor)
    if anchor_losses:
        con = sum(anchor_losses) / len(anchor_losses)
    else:
        con = torch.zeros((), dtype=torch.float64)
    return ce + eta * con, ce, con, num_pairs, len(anchor_losses)


def dense_labels(class_a, class_b, weight_a, num_classes):
    out = []
    for a, b, wa in zip(class_a.tolist(), class_b.tolist(), weight_a.tolist()):
        out.append(wa * _one_hot(a, num_classes) + (1 - wa) * _one_hot(b, num_classes))
    return torch.stack(out)


# ----------------------------------------------------------------------------------------------------
# Fixtures


def make_heads(dim, num_classes, proj_dim=8, seed=0):
    torch.manual_seed(seed)
    classifier = nn.Linear(dim, num_classes)
    projector = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, proj_dim))
    return classifier, projector


def make_draws(batch_size, seed):
    torch.manual_seed(seed)
    return sample_core_tuning_draws(batch_size, alpha=1.0, lam_min=0.8)


def make_features(batch_size, dim, seed, signed=False):
    torch.manual_seed(seed)
    x = torch.randn(batch_size, dim)
    # pooled ReLU features have positive cosines, which is what the reference mining relies on
    return x if signed else x.abs() + 0.05


def run_both(features, labels, draws, classifier, projector, preset):
    """(ours output, our feature grad, float64 tuple, float64 feature grad)."""
    h32 = features.clone().requires_grad_()
    loss = CoreTuningLoss(eta=ETA, temperature=TAU, preset=preset)
    out = loss(h32, labels, classifier, projector, draws=draws)
    (grad32,) = torch.autograd.grad(out.loss, h32)
    h64 = features.double().requires_grad_()
    ref = loss64(h64, labels, draws, classifier, projector, preset)
    (grad64,) = torch.autograd.grad(ref[0], h64, allow_unused=True)
    if grad64 is None:
        grad64 = torch.zeros_like(h64)
    return out, grad32, ref, grad64


def assert_matches_float64(out, grad32, ref, grad64, tol=1e-5):
    total, ce, con, num_pairs, num_anchors = ref
    total, ce, con = (float(t.detach()) for t in (total, ce, con))
    assert out.ce_loss.detach().item() == pytest.approx(ce, abs=tol, rel=tol)
    assert out.contrastive_loss.detach().item() == pytest.approx(con, abs=tol, rel=tol)
    assert out.loss.detach().item() == pytest.approx(total, abs=tol, rel=tol)
    assert int(out.num_positive_pairs) == num_pairs
    assert int(out.num_anchors_with_positives) == num_anchors
    torch.testing.assert_close(grad32.double(), grad64, atol=tol, rtol=1e-4)
    assert torch.isfinite(grad32).all()


# ----------------------------------------------------------------------------------------------------
# Against float64


@pytest.mark.parametrize("preset", ["paper", "reference"])
@pytest.mark.parametrize("signed", [False, True])
def test_rows_and_soft_labels_match_float64(preset, signed):
    batch_size, dim, num_classes = 9, 12, 3
    features = make_features(batch_size, dim, seed=1, signed=signed)
    labels = torch.tensor([0, 1, 2, 0, 1, 0, 2, 2, 1])
    draws = make_draws(batch_size, seed=2)
    rows, class_a, class_b, weight_a = build_hard_pair_rows(features, labels, draws, preset)
    rows_ref, soft_ref = rows64(features.double(), labels, draws, num_classes, preset)
    torch.testing.assert_close(rows.double(), torch.stack(rows_ref), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(
        dense_labels(class_a, class_b, weight_a, num_classes), torch.stack(soft_ref), atol=1e-6, rtol=0
    )
    assert rows.shape == (3 * batch_size, dim) and rows.dtype == torch.float32
    assert (class_a <= class_b).all()


@pytest.mark.parametrize("preset", ["paper", "reference"])
@pytest.mark.parametrize(
    "batch_size,num_classes,signed,seed",
    [(8, 3, False, 0), (12, 4, True, 1), (10, 2, False, 2)],
)
def test_losses_and_feature_gradients_match_float64(preset, batch_size, num_classes, signed, seed):
    dim = 16
    features = make_features(batch_size, dim, seed=seed, signed=signed)
    torch.manual_seed(seed + 100)
    labels = torch.randint(0, num_classes, (batch_size,))
    classifier, projector = make_heads(dim, num_classes, seed=seed)
    draws = make_draws(batch_size, seed=seed + 200)
    out, grad32, ref, grad64 = run_both(features, labels, draws, classifier, projector, preset)
    assert_matches_float64(out, grad32, ref, grad64)
    assert int(out.num_positive_pairs) > 0  # the case actually exercises the contrastive term
    for tensor in (out.loss, out.ce_loss, out.contrastive_loss, out.logits):
        assert tensor.dtype == torch.float32
    assert out.logits.shape == (batch_size, num_classes)


def test_mixed_rows_with_identical_soft_labels_are_positives():
    # rows 0 and 2 (class 0) both take a class-1 partner with the same lam: their semi-hard negative
    # rows carry identical soft labels and must be positives of each other
    dim, num_classes = 10, 3
    features = make_features(6, dim, seed=3)
    labels = torch.tensor([0, 1, 0, 1, 2, 2])
    draws = CoreTuningDraws(
        permutation=torch.tensor([1, 4, 3, 5, 0, 2]),
        lam=torch.tensor([0.85, 0.9, 0.85, 0.95, 0.81, 0.99]),
        mu=torch.tensor([0.3, 0.6, 0.1, 0.7, 0.45, 0.2]),
    )
    rows = build_hard_pair_rows(features, labels, draws, "paper")
    assert (rows.class_a[6], rows.class_b[6]) == (0, 1)
    assert rows.weight_a[6] == rows.weight_a[8]
    classifier, projector = make_heads(dim, num_classes, seed=3)
    out, grad32, ref, grad64 = run_both(features, labels, draws, classifier, projector, "paper")
    assert_matches_float64(out, grad32, ref, grad64)


def test_lam_and_mu_at_their_bounds_collapse_to_pure_labels():
    dim, num_classes = 8, 3
    features = make_features(4, dim, seed=4)
    labels = torch.tensor([0, 1, 2, 1])
    draws = CoreTuningDraws(
        permutation=torch.tensor([1, 2, 3, 0]),
        lam=torch.tensor([1.0, 0.9, 1.0, 0.8]),
        mu=torch.tensor([1.0, 0.0, 0.5, 0.0]),
    )
    rows = build_hard_pair_rows(features, labels, draws, "paper")
    # lam = 1: the row is the partner, label pure partner class
    assert (rows.class_a[4].item(), rows.class_b[4].item(), rows.weight_a[4].item()) == (1, 1, 1.0)
    assert (rows.class_a[6].item(), rows.class_b[6].item(), rows.weight_a[6].item()) == (1, 1, 1.0)
    # mu = 0: the row is the hard negative, whatever class that is
    hp, hn = mine_hard_pairs(features, labels, "paper")
    c = labels[hn[1]].item()
    assert (rows.class_a[9].item(), rows.class_b[9].item(), rows.weight_a[9].item()) == (c, c, 1.0)
    classifier, projector = make_heads(dim, num_classes, seed=4)
    out, grad32, ref, grad64 = run_both(features, labels, draws, classifier, projector, "paper")
    assert_matches_float64(out, grad32, ref, grad64)


# ----------------------------------------------------------------------------------------------------
# Edge cases


def test_no_positives_gives_zero_contrastive_and_finite_gradients():
    # every clean label distinct, a derangement as partners, and random weights: no two rows share a
    # soft label
    batch_size, dim, num_classes = 5, 8, 5
    features = make_features(batch_size, dim, seed=5)
    labels = torch.arange(batch_size)
    draws = CoreTuningDraws(
        permutation=torch.roll(torch.arange(batch_size), 1),
        lam=torch.tensor([0.81, 0.83, 0.87, 0.91, 0.97]),
        mu=torch.tensor([0.12, 0.33, 0.47, 0.61, 0.74]),
    )
    classifier, projector = make_heads(dim, num_classes, seed=5)
    out, grad32, ref, grad64 = run_both(features, labels, draws, classifier, projector, "paper")
    assert out.contrastive_loss.item() == 0.0
    assert int(out.num_positive_pairs) == 0 and int(out.num_anchors_with_positives) == 0
    assert torch.isfinite(out.loss) and out.loss.item() == pytest.approx(out.ce_loss.item())
    assert_matches_float64(out, grad32, ref, grad64)


def test_focal_supcon_without_positives_has_zero_finite_gradient():
    torch.manual_seed(6)
    z = nn.functional.normalize(torch.randn(6, 4), dim=1).requires_grad_()
    labels = torch.arange(6)
    result = focal_supcon_loss(z, labels, labels, torch.ones(6), temperature=TAU)
    result.loss.backward()
    assert result.loss.item() == 0.0
    assert torch.equal(z.grad, torch.zeros_like(z))


def test_one_sample_per_class_falls_back_to_the_anchor():
    batch_size, dim, num_classes = 6, 8, 10
    features = make_features(batch_size, dim, seed=7)
    labels = torch.tensor([3, 1, 4, 0, 9, 2])
    hp, hn = mine_hard_pairs(features, labels, "paper")
    assert hp.tolist() == list(range(batch_size))
    assert hn.tolist() == mine64(features, labels, "paper")[1]
    classifier, projector = make_heads(dim, num_classes, seed=7)
    draws = make_draws(batch_size, seed=7)
    for preset in ("paper", "reference"):
        out, grad32, ref, grad64 = run_both(features, labels, draws, classifier, projector, preset)
        assert_matches_float64(out, grad32, ref, grad64)


@pytest.mark.parametrize("preset", ["paper", "reference"])
def test_batch_size_one(preset):
    dim, num_classes = 8, 3
    features = make_features(1, dim, seed=8)
    labels = torch.tensor([2])
    classifier, projector = make_heads(dim, num_classes, seed=8)
    draws = make_draws(1, seed=8)
    out, grad32, ref, grad64 = run_both(features, labels, draws, classifier, projector, preset)
    assert torch.isfinite(out.loss) and torch.isfinite(grad32).all()
    # the three rows are the same sample with the same label: six ordered positive pairs
    assert int(out.num_positive_pairs) == 6
    assert_matches_float64(out, grad32, ref, grad64)
    # with sampled draws too
    out = CoreTuningLoss()(features, labels, classifier, projector)
    assert torch.isfinite(out.loss)


def test_thousand_classes_positives_are_exact():
    # The reference script codes a soft label as sum_c y_c 10^c in float32: every class >= 39 becomes
    # inf, and even for C = 21 two different mixes collide. Show the collisions, then check hubtune's
    # positives against the float64 statement.
    powers = 10.0 ** torch.arange(1000, dtype=torch.float32)
    assert powers[500] == powers[999] == float("inf")
    mix_0 = 0.2 * powers[0] + 0.8 * powers[20]
    mix_1 = 0.2 * powers[1] + 0.8 * powers[20]
    assert mix_0 == mix_1

    dim, num_classes = 12, 1000
    labels = torch.tensor([0, 999, 500, 999, 500, 1, 20, 998, 0, 999])
    batch_size = labels.numel()
    features = make_features(batch_size, dim, seed=9)
    classifier, projector = make_heads(dim, num_classes, seed=9)
    draws = make_draws(batch_size, seed=9)
    for preset in ("paper", "reference"):
        out, grad32, ref, grad64 = run_both(features, labels, draws, classifier, projector, preset)
        assert_matches_float64(out, grad32, ref, grad64)

    # clean rows of classes 500 and 999 are not positives; two of class 999 are
    z = nn.functional.normalize(torch.randn(3, 4), dim=1)
    cls = torch.tensor([500, 999, 999])
    result = focal_supcon_loss(z, cls, cls, torch.ones(3), temperature=TAU)
    assert int(result.num_positive_pairs) == 2
    # mixes (0, 20) and (1, 20) with the same weights are different labels
    result = focal_supcon_loss(
        z[:2], torch.tensor([0, 1]), torch.tensor([20, 20]), torch.tensor([0.2, 0.2]), temperature=TAU
    )
    assert int(result.num_positive_pairs) == 0


def test_bf16_autocast_computes_in_float32():
    dim, num_classes, batch_size = 16, 4, 8
    torch.manual_seed(10)
    backbone = nn.Linear(dim, dim)
    classifier, projector = make_heads(dim, num_classes, seed=10)
    inputs = torch.randn(batch_size, dim)
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    draws = make_draws(batch_size, seed=10)
    loss = CoreTuningLoss()

    with torch.autocast("cpu", dtype=torch.bfloat16):
        features_bf16 = backbone(inputs).relu()
        out_bf16 = loss(features_bf16, labels, classifier, projector, draws=draws)
    assert features_bf16.dtype == torch.bfloat16
    for tensor in (out_bf16.loss, out_bf16.ce_loss, out_bf16.contrastive_loss, out_bf16.logits):
        assert tensor.dtype == torch.float32
    out_bf16.loss.backward()
    assert torch.isfinite(backbone.weight.grad).all()

    # inside the loss nothing runs in bf16: same bf16-rounded features outside autocast, same result
    out_same = loss(features_bf16.detach().float(), labels, classifier, projector, draws=draws)
    assert out_bf16.loss.item() == pytest.approx(out_same.loss.item(), abs=1e-6)
    # and close to the all-float32 pipeline
    out_fp32 = loss(backbone(inputs).relu(), labels, classifier, projector, draws=draws)
    assert out_bf16.loss.item() == pytest.approx(out_fp32.loss.item(), abs=5e-2)

    # bf16 heads: rows are cast to the heads' dtype, outputs still float32
    bf16_classifier, bf16_projector = classifier.to(torch.bfloat16), projector.to(torch.bfloat16)
    out_heads = loss(features_bf16.detach().float(), labels, bf16_classifier, bf16_projector, draws)
    assert out_heads.loss.dtype == torch.float32 and out_heads.logits.dtype == torch.float32
    assert out_heads.loss.item() == pytest.approx(out_same.loss.item(), abs=5e-2)


# ----------------------------------------------------------------------------------------------------
# The reference preset's documented differences


def reaches(output, leaf):
    (grad,) = torch.autograd.grad(output, leaf, allow_unused=True, retain_graph=True)
    return grad is not None and bool(grad.abs().sum() > 0)


def test_reference_detaches_clean_rows_from_the_backbone():
    dim, num_classes, batch_size = 8, 3, 6
    features = make_features(batch_size, dim, seed=11)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    classifier, projector = make_heads(dim, num_classes, seed=11)
    draws = make_draws(batch_size, seed=11)
    for preset, carries_gradient in (("paper", True), ("reference", False)):
        h = features.clone().requires_grad_()
        rows = build_hard_pair_rows(h, labels, draws, preset).rows
        assert reaches(rows[:batch_size].sum(), h) is carries_gradient
        assert reaches(rows[batch_size:].sum(), h)  # the mixed rows always do
        out = CoreTuningLoss(preset=preset)(h, labels, classifier, projector, draws=draws)
        # the clean logits reach the backbone only when the clean rows carry gradient
        assert reaches(out.logits.sum(), h) is carries_gradient
        # the heads learn from the clean rows in both presets
        classifier.zero_grad()
        out.logits.sum().backward()
        assert classifier.weight.grad.abs().sum() > 0


def test_reference_normalises_by_the_number_of_rows():
    # every anchor has exactly one positive, so the paper's 1/|P(i)| = 1 and the reference's 1/N differ
    # by exactly N
    torch.manual_seed(12)
    num_rows = 8
    z = nn.functional.normalize(torch.randn(num_rows, 5), dim=1)
    cls = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    weight = torch.ones(num_rows)
    paper = focal_supcon_loss(z, cls, cls, weight, TAU, normalisation="positives")
    reference = focal_supcon_loss(z, cls, cls, weight, TAU, normalisation="rows")
    assert paper.loss.item() > 0
    assert reference.loss.item() * num_rows == pytest.approx(paper.loss.item(), rel=1e-6)
    with pytest.raises(ValueError, match="normalisation"):
        focal_supcon_loss(z, cls, cls, weight, TAU, normalisation="mean")


def test_reference_hard_positive_is_anchor_or_negative():
    # Positive cosines: the masked matrix's zeros (the anchor, other classes) win the argmin.
    features = make_features(6, 8, seed=13)
    labels = torch.tensor([0, 1, 0, 0, 1, 2])
    hp, hn = mine_hard_pairs(features, labels, "reference")
    assert hp.tolist() == [0, 1, 1, 1, 4, 5]
    assert hp.tolist() == mine64(features, labels, "reference")[0]
    # with other classes present, the reference's hn is the paper's hn
    assert hn.tolist() == mine_hard_pairs(features, labels, "paper").hard_negative.tolist()
    paper_hp = mine_hard_pairs(features, labels, "paper").hard_positive
    assert paper_hp.tolist() == mine64(features, labels, "paper")[0]
    assert all(labels[j] == labels[i] for i, j in enumerate(paper_hp.tolist()))


def test_mining_on_a_constructed_batch():
    angles = torch.tensor([0.0, 10.0, 80.0, 20.0, 60.0, 85.0]) * math.pi / 180
    features = torch.stack([angles.cos(), angles.sin()], dim=1)
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    hp, hn = mine_hard_pairs(features, labels, "paper")
    assert hp.tolist() == [2, 2, 0, 4, 3, 5]
    assert hn.tolist() == [3, 3, 5, 1, 2, 2]
    hp, hn = mine_hard_pairs(features, labels, "reference")
    assert hp.tolist() == [0, 1, 2, 3, 4, 5]
    assert hn.tolist() == [3, 3, 5, 1, 2, 2]
    # one class only: the paper falls back to the anchor, the reference's argmax lands on index 0
    one_class = torch.zeros(6, dtype=torch.long)
    assert mine_hard_pairs(features, one_class, "paper").hard_negative.tolist() == list(range(6))
    assert mine_hard_pairs(features, one_class, "reference").hard_negative.tolist() == [0] * 6
    # mining carries no gradient
    h = features.clone().requires_grad_()
    assert not mine_hard_pairs(h, labels).hard_positive.requires_grad


def test_soft_label_cross_entropy_matches_dense_targets():
    torch.manual_seed(14)
    logits = torch.randn(5, 7)
    a = torch.tensor([0, 2, 3, 6, 1])
    b = torch.tensor([4, 2, 5, 6, 3])
    w = torch.tensor([0.3, 1.0, 0.9, 1.0, 0.15])
    dense = dense_labels(a, b, w, 7)
    expected = -(dense * torch.log_softmax(logits.double(), dim=1)).sum(1).mean()
    assert soft_label_cross_entropy(logits, a, b, w).item() == pytest.approx(float(expected), rel=1e-6)


# ----------------------------------------------------------------------------------------------------
# Draws, presets, validation


def test_sampled_draws_respect_their_ranges():
    torch.manual_seed(15)
    draws = sample_core_tuning_draws(4000, alpha=1.0, lam_min=0.8)
    assert draws.lam.min() >= 0.8 and draws.lam.max() <= 1.0
    assert (draws.lam == 0.8).float().mean() == pytest.approx(0.8, abs=0.03)  # P(Beta(1,1) <= 0.8)
    assert draws.mu.min() >= 0.0 and draws.mu.max() <= 1.0
    assert draws.mu.mean() == pytest.approx(0.5, abs=0.03)
    assert sorted(draws.permutation.tolist()) == list(range(4000))
    assert draws.lam.dtype == torch.float32 and draws.permutation.dtype == torch.long


def test_reference_constructor_and_overrides():
    loss = CoreTuningLoss.reference(eta=0.5)
    assert loss.preset == "reference" and loss.eta == 0.5
    assert CoreTuningLoss().preset == "paper"
    assert list(loss.parameters()) == []


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"eta": -0.1}, "eta"),
        ({"temperature": 0.0}, "temperature"),
        ({"alpha": 0.0}, "alpha"),
        ({"lam_min": 1.5}, "lam_min"),
        ({"lam_min": -0.1}, "lam_min"),
        ({"preset": "paper2"}, "preset"),
    ],
)
def test_invalid_hyper_parameters_raise(kwargs, match):
    with pytest.raises(ConfigError, match=match) as from_loss:
        CoreTuningLoss(**kwargs)
    # The registered method validates through the same statement: same error, same message.
    with pytest.raises(ConfigError) as from_method:
        CoreTuningConfig(**kwargs)
    assert isinstance(from_loss.value, ValueError)
    if "preset" not in kwargs:  # the method's base class names an unknown preset first (MethodError)
        assert str(from_method.value) == str(from_loss.value)


def test_loss_and_method_share_one_statement_of_defaults():
    settings = CoreTuningSettings()
    assert settings.eta == 0.03
    loss, config = CoreTuningLoss(), CoreTuningConfig()
    for name in ("preset", "eta", "temperature", "alpha", "lam_min"):
        assert getattr(loss, name) == getattr(config, name) == getattr(settings, name), name
    assert isinstance(config, CoreTuningSettings)
    built = CoreTuningLoss.from_settings(CoreTuningConfig(eta=0.2, temperature=0.1, preset="reference"))
    assert (built.eta, built.temperature, built.preset) == (0.2, 0.1, "reference")


def test_invalid_inputs_raise():
    classifier, projector = make_heads(4, 3)
    loss = CoreTuningLoss()
    features = torch.randn(4, 4)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        loss(features, torch.tensor([0, 1, 3, 2]), classifier, projector)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        loss(features, torch.tensor([0, -1, 2, 2]), classifier, projector)
    with pytest.raises(ValueError, match="integer class indices"):
        loss(features, torch.tensor([0.0, 1.0, 2.0, 1.0]), classifier, projector)
    with pytest.raises(ValueError, match="one class index per row"):
        loss(features, torch.tensor([0, 1, 2]), classifier, projector)
    with pytest.raises(ValueError, match=r"\(batch, dim\)"):
        loss(torch.randn(4, 4, 1), torch.tensor([0, 1, 2, 1]), classifier, projector)
    bad_draws = CoreTuningDraws(torch.arange(3), torch.ones(4), torch.ones(4))
    with pytest.raises(ValueError, match="draws.permutation"):
        loss(features, torch.tensor([0, 1, 2, 1]), classifier, projector, draws=bad_draws)


# ----------------------------------------------------------------------------------------------------
# No host-device sync in the forward pass


class _FailOnHostSync(TorchDispatchMode):
    """Fails on every aten op that reads a device value back to the host (a sync on CUDA)."""

    SYNCING = {
        "aten::_local_scalar_dense",
        "aten::nonzero",
        "aten::_unique",
        "aten::_unique2",
        "aten::unique_dim",
        "aten::unique_consecutive",
        "aten::masked_select",
        "aten::is_nonzero",
        "aten::equal",
    }

    def __init__(self):
        super().__init__()
        self.seen = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name
        self.seen.add(name)
        if name in self.SYNCING:
            raise AssertionError(f"host-device sync: {name}")
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("preset", ["paper", "reference"])
def test_forward_and_backward_do_no_host_sync(preset):
    classifier, projector = make_heads(8, 1000)
    features = make_features(6, 8, seed=16).requires_grad_()
    labels = torch.tensor([0, 999, 5, 0, 999, 7])
    loss = CoreTuningLoss(preset=preset)
    loss.validate_labels = False
    with _FailOnHostSync() as mode:
        out = loss(features, labels, classifier, projector)  # draws sampled inside
        out.loss.backward()
    assert "aten::logsumexp" in mode.seen and "aten::mm" in mode.seen  # the mode saw the maths
    assert torch.isfinite(features.grad).all()


def test_label_check_is_the_only_host_read():
    classifier, projector = make_heads(8, 3)
    features = make_features(4, 8, seed=17)
    with pytest.raises(AssertionError, match="_local_scalar_dense"):
        with _FailOnHostSync():
            CoreTuningLoss()(features, torch.tensor([0, 1, 2, 0]), classifier, projector)


def test_module_exports():
    assert core_tuning.CoreTuningLoss is CoreTuningLoss


@pytest.mark.parametrize("preset", ["paper", "reference"])
def test_heads_on_mixed_outputs_equal_heads_on_mixed_rows(preset):
    """The leading Linear runs on the B clean rows and its outputs are mixed: same values and gradients."""
    from hubtune.losses.core_tuning import build_hard_pair_rows, head_on_rows, plan_hard_pairs

    torch.manual_seed(0)
    features = torch.randn(12, 16, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 3, 3, 4])
    draws = sample_core_tuning_draws(12)
    projector = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 8))
    classifier = nn.Linear(16, 5)
    plan = plan_hard_pairs(features, labels, draws, preset)
    rows = build_hard_pair_rows(features, labels, draws, preset).rows
    for head in (projector, classifier):
        fast = head_on_rows(head, features, plan, detach_clean=preset == "reference")
        slow = head(rows)
        torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
        inputs = [features, *head.parameters()]
        grads_fast = torch.autograd.grad(fast.square().sum(), inputs, retain_graph=True)
        grads_slow = torch.autograd.grad(slow.square().sum(), inputs, retain_graph=True)
        for a, b in zip(grads_fast, grads_slow):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-5)

    class AbsHead(nn.Linear):  # not affine: must not take the shortcut
        def forward(self, x):
            return super().forward(x).abs()

    abs_head = AbsHead(16, 5)
    torch.testing.assert_close(head_on_rows(abs_head, features, plan), abs_head(rows))
