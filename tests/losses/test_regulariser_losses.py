"""L2-SP, BSS, DELTA and Co-Tuning losses against independent float64 statements of docs/methods.md, sections 5-8:
values and gradients, with edge cases (equal weights, one-sample batches, k beyond the rank, 1000 classes, bf16,
classes without samples)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hubtune.losses import (
    BSSLoss,
    DeltaLoss,
    L2SPLoss,
    accumulate_relationship,
    batch_spectral_shrinkage,
    category_relationship,
    channel_attention,
    channels_first,
    co_tuning_loss,
    delta_feature_penalty,
)

D64 = torch.float64


def _g(seed):
    return torch.Generator().manual_seed(seed)


def _ce_statement(logits, labels):
    """Mean over rows of log(sum_k exp(z_k)) - z_y, with plain Python loops."""
    rows = []
    for z, y in zip(logits.tolist(), labels.tolist()):
        top = max(z)
        rows.append(top + math.log(sum(math.exp(v - top) for v in z)) - z[y])
    return sum(rows) / len(rows)


# ------------------------------------------------------------------------------------------------------- L2-SP


def test_l2_sp_loss_and_gradients_match_the_statement():
    g = _g(0)
    params = [torch.randn(4, 3, generator=g, dtype=D64, requires_grad=True), torch.randn(5, generator=g, dtype=D64, requires_grad=True)]
    starts = [p.detach() + 0.3 * torch.randn(p.shape, generator=g, dtype=D64) for p in params]
    head = [torch.randn(3, 2, generator=g, dtype=D64, requires_grad=True), torch.randn(3, generator=g, dtype=D64, requires_grad=True)]
    logits = torch.randn(6, 3, generator=g, dtype=D64, requires_grad=True)
    labels = torch.tensor([0, 2, 1, 1, 0, 2])
    alpha, beta = 0.1, 0.01
    out = L2SPLoss(alpha, beta)(logits, labels, params, starts, head)
    sp = sum(alpha / 2 * sum((a - b) ** 2 for a, b in zip(p.detach().flatten().tolist(), s.flatten().tolist()))
             for p, s in zip(params, starts))
    hl = sum(beta / 2 * sum(v * v for v in h.detach().flatten().tolist()) for h in head)
    ce = _ce_statement(logits.detach(), labels)
    assert out.sp_loss.item() == pytest.approx(sp, rel=1e-12)
    assert out.head_loss.item() == pytest.approx(hl, rel=1e-12)
    assert out.loss.item() == pytest.approx(ce + sp + hl, rel=1e-12)
    out.loss.backward()
    for p, s in zip(params, starts):  # d/dw alpha/2 ||w - w0||^2 = alpha (w - w0)
        torch.testing.assert_close(p.grad, alpha * (p.detach() - s), rtol=1e-12, atol=1e-15)
    for h in head:
        torch.testing.assert_close(h.grad, beta * h.detach(), rtol=1e-12, atol=1e-15)
    probs = torch.softmax(logits.detach(), 1)
    torch.testing.assert_close(logits.grad, (probs - torch.eye(3, dtype=D64)[labels]) / 6)


def test_l2_sp_at_the_starting_point_is_zero_with_zero_gradient_and_bf16_weights_work():
    p = torch.randn(3, 3, dtype=torch.bfloat16, requires_grad=True)
    out = L2SPLoss(1.0, 0.0)(torch.zeros(2, 2), torch.tensor([0, 1]), [p], [p.detach().clone()], [])
    assert out.sp_loss.item() == 0.0 and out.head_loss.item() == 0.0 and out.sp_loss.dtype == torch.float32
    out.loss.backward()
    assert torch.count_nonzero(p.grad) == 0
    q = torch.ones(2, dtype=torch.bfloat16, requires_grad=True)
    sp = L2SPLoss(2.0, 0.0)(torch.zeros(1, 2), torch.tensor([0]), [q], [torch.zeros(2, dtype=torch.bfloat16)], []).sp_loss
    assert sp.item() == pytest.approx(2.0)  # 2/2 * (1 + 1)


# ------------------------------------------------------------------------------------------------------- BSS


def _bss_statement(features: np.ndarray, k: int, eta: float) -> float:
    """eta * the k smallest eigenvalues of the (smaller) Gram matrix = the k smallest squared singular values."""
    gram = features @ features.T if features.shape[0] <= features.shape[1] else features.T @ features
    eig = np.sort(np.linalg.eigvalsh(gram))
    return eta * float(np.clip(eig[:k], 0, None).sum())


def _bss_gradient_statement(features: np.ndarray, k: int, eta: float) -> np.ndarray:
    """d/dF sum_{i in smallest k} sigma_i^2 = sum 2 sigma_i u_i v_i^T."""
    u, s, vt = np.linalg.svd(features, full_matrices=False)
    order = np.argsort(s)[:k]
    return eta * sum(2 * s[i] * np.outer(u[:, i], vt[i]) for i in order)


@pytest.mark.parametrize("batch, dim, k", [(8, 5, 1), (6, 10, 2), (10, 10, 3), (4, 16, 4), (1, 7, 1), (1, 7, 3), (3, 2, 5)])
def test_bss_value_and_gradient_match_the_statement(batch, dim, k):
    g = _g(batch * 100 + dim + k)
    features = torch.randn(batch, dim, generator=g, dtype=D64) * torch.linspace(0.5, 3, dim, dtype=D64)
    features.requires_grad_(True)
    eta = 0.01
    loss = batch_spectral_shrinkage(features, k, eta)
    f = features.detach().numpy()
    assert loss.item() == pytest.approx(_bss_statement(f, k, eta), rel=1e-9, abs=1e-14)
    loss.backward()
    np.testing.assert_allclose(features.grad.numpy(), _bss_gradient_statement(f, k, eta), rtol=1e-7, atol=1e-12)


def test_bss_on_a_one_sample_batch_shrinks_the_feature_norm():
    # one row: one singular value, ||f||; k beyond the rank takes every singular value there is.
    f = torch.tensor([[3.0, 4.0]], dtype=D64, requires_grad=True)
    for k in (1, 2, 10):
        f.grad = None
        loss = batch_spectral_shrinkage(f, k, 0.5)
        assert loss.item() == pytest.approx(0.5 * 25)
        loss.backward()
        torch.testing.assert_close(f.grad, torch.tensor([[3.0, 4.0]], dtype=D64))  # 0.5 * 2 f


def test_bss_in_bf16_runs_the_svd_in_float32():
    g = _g(3)
    f32 = torch.randn(16, 32, generator=g) * torch.linspace(0.1, 4, 32)
    f_bf16 = f32.to(torch.bfloat16).requires_grad_(True)
    loss = batch_spectral_shrinkage(f_bf16, 2, 0.001)
    assert loss.dtype == torch.float32
    expected = _bss_statement(f_bf16.detach().double().numpy(), 2, 0.001)  # same bf16 values, exact maths
    assert loss.item() == pytest.approx(expected, rel=1e-4)
    loss.backward()
    assert f_bf16.grad.dtype == torch.bfloat16 and torch.isfinite(f_bf16.grad.float()).all()


def test_bss_loss_adds_cross_entropy():
    g = _g(4)
    feats, logits, labels = torch.randn(5, 4, generator=g, dtype=D64), torch.randn(5, 3, generator=g, dtype=D64), torch.tensor([0, 1, 2, 0, 1])
    loss, ce, bss = BSSLoss(eta=0.1, k=1)(feats, logits, labels)
    assert ce.item() == pytest.approx(_ce_statement(logits, labels), rel=1e-12)
    assert bss.item() == pytest.approx(_bss_statement(feats.numpy(), 1, 0.1), rel=1e-9)
    assert loss.item() == pytest.approx(ce.item() + bss.item(), rel=1e-12)


# ------------------------------------------------------------------------------------------------------- DELTA


def _attention_statement(features, labels, weight, bias):
    """For each sample and channel: zero the channel, recompute the logits, the CE increase; softmax over channels."""
    b_, c_ = features.shape
    out = np.zeros((b_, c_))
    for b in range(b_):
        f = features[b].tolist()
        base = _ce_statement(torch.tensor([[sum(weight[k][j] * f[j] for j in range(c_)) + bias[k] for k in range(len(weight))]]), labels[b:b + 1])
        inc = []
        for c in range(c_):
            g = list(f)
            g[c] = 0.0
            z = [[sum(weight[k][j] * g[j] for j in range(c_)) + bias[k] for k in range(len(weight))]]
            inc.append(_ce_statement(torch.tensor(z, dtype=D64), labels[b:b + 1]) - base)
        top = max(inc)
        e = [math.exp(v - top) for v in inc]
        out[b] = [v / sum(e) for v in e]
    return out


@pytest.mark.parametrize("classes", [2, 5, 1000])
def test_delta_channel_attention_matches_removing_each_channel(classes):
    g = _g(classes)
    features = torch.randn(3, 6, generator=g, dtype=D64)
    weight = torch.randn(classes, 6, generator=g, dtype=D64)
    bias = torch.randn(classes, generator=g, dtype=D64)
    labels = torch.tensor([0, 1, classes - 1])
    att = channel_attention(features, labels, weight, bias)
    expected = _attention_statement(features, labels, weight.tolist(), bias.tolist())
    np.testing.assert_allclose(att.numpy(), expected, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(att.sum(1), torch.ones(3, dtype=D64))


def test_delta_attention_with_a_zero_head_is_uniform_and_needs_no_bias():
    att = channel_attention(torch.randn(2, 4, dtype=D64), torch.tensor([0, 1]), torch.zeros(3, 4, dtype=D64), None)
    torch.testing.assert_close(att, torch.full((2, 4), 0.25, dtype=D64))


def test_delta_feature_penalty_and_gradient_match_the_statement_for_cnn_maps_and_tokens():
    g = _g(7)
    for shape in [(2, 3, 4, 5), (2, 6, 3)]:  # (B, C, H, W) and (B, tokens, D)
        fm = torch.randn(shape, generator=g, dtype=D64, requires_grad=True)
        fm0 = torch.randn(shape, generator=g, dtype=D64)
        cf, cf0 = channels_first(fm), channels_first(fm0)
        att = torch.softmax(torch.randn(cf.shape[:2], generator=g, dtype=D64), 1)
        loss = delta_feature_penalty([cf], [cf0], [att])
        # statement: mean over b of sum over c of W_bc * sum over positions (x - x0)^2, positions read from the layout
        a, a0 = fm.detach().numpy(), fm0.numpy()
        total, grad = 0.0, np.zeros(shape)
        for b in range(shape[0]):
            for c in range(cf.shape[1]):
                if len(shape) == 4:
                    diff = a[b, c] - a0[b, c]
                    grad[b, c] = 2 * att[b, c].item() * diff / shape[0]
                else:
                    diff = a[b, :, c] - a0[b, :, c]
                    grad[b, :, c] = 2 * att[b, c].item() * diff / shape[0]
                total += att[b, c].item() * float((diff ** 2).sum())
        assert loss.item() == pytest.approx(total / shape[0], rel=1e-12)
        loss.backward()
        np.testing.assert_allclose(fm.grad.numpy(), grad, rtol=1e-10, atol=1e-14)


def test_delta_loss_adds_cross_entropy_the_weighted_maps_and_head_l2():
    g = _g(8)
    head = torch.nn.Linear(4, 3).double()
    fm = torch.randn(2, 4, 2, 2, generator=g, dtype=D64, requires_grad=True)
    fm0 = torch.randn(2, 4, 2, 2, generator=g, dtype=D64)
    f0 = fm0.mean((2, 3))
    labels = torch.tensor([1, 2])
    logits = head(fm.mean((2, 3)))
    loss, ce, feat, hl = DeltaLoss(alpha=0.5, beta=0.2)(logits, labels, channels_first(fm), channels_first(fm0), f0, head,
                                                        list(head.parameters()))
    att = channel_attention(f0, labels, head.weight.detach(), head.bias.detach())
    expected_feat = 0.5 * float((att * ((fm.detach() - fm0) ** 2).sum((2, 3))).sum(1).mean())
    expected_head = 0.1 * float(sum((p.detach() ** 2).sum() for p in head.parameters()))
    assert feat.item() == pytest.approx(expected_feat, rel=1e-12) and hl.item() == pytest.approx(expected_head, rel=1e-12)
    assert loss.item() == pytest.approx(_ce_statement(logits.detach(), labels) + expected_feat + expected_head, rel=1e-12)
    loss.backward()
    torch.testing.assert_close(head.bias.grad, 0.2 * head.bias.detach() + (torch.softmax(logits.detach(), 1) - torch.eye(3, dtype=D64)[labels]).mean(0))


def test_delta_attention_is_a_constant_of_the_gradient():
    # the paper's W is computed from the starting model: no gradient flows into the classifier through it
    head = torch.nn.Linear(3, 2).double()
    fm = torch.randn(2, 3, 1, 1, dtype=D64)
    fm0 = torch.zeros(2, 3, 1, 1, dtype=D64)
    _, _, feat, _ = DeltaLoss(1.0, 0.0)(head(fm.flatten(1)).detach(), torch.tensor([0, 1]), channels_first(fm).requires_grad_(),
                                        channels_first(fm0), fm.flatten(1), head, [])
    feat.backward()
    assert head.weight.grad is None


# ------------------------------------------------------------------------------------------------------- Co-Tuning


def test_co_tuning_relationship_is_the_mean_source_prediction_per_target_class():
    g = _g(9)
    source_classes, target_classes = 1000, 4
    logits = [torch.randn(5, source_classes, generator=g, dtype=D64) for _ in range(3)]
    labels = [torch.tensor([0, 1, 1, 2, 0]), torch.tensor([2, 2, 0, 1, 1]), torch.tensor([0, 0, 0, 0, 0])]
    sums = torch.zeros(target_classes, source_classes, dtype=D64)
    counts = torch.zeros(target_classes, dtype=D64)
    for z, y in zip(logits, labels):
        accumulate_relationship(sums, counts, z, y)
    rel = category_relationship(sums, counts)
    # statement: per class, the plain average of softmax rows; class 3 has no sample: uniform 1/1000
    rows = {t: [] for t in range(target_classes)}
    for z, y in zip(logits, labels):
        for row, t in zip(z.tolist(), y.tolist()):
            top = max(row)
            e = [math.exp(v - top) for v in row]
            rows[t].append([v / sum(e) for v in e])
    for t in range(3):
        np.testing.assert_allclose(rel[t].numpy(), np.mean(rows[t], axis=0), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(rel[3].numpy(), np.full(source_classes, 1e-3))
    torch.testing.assert_close(rel.sum(1), torch.ones(target_classes, dtype=D64))


def test_co_tuning_loss_and_gradients_match_the_statement():
    g = _g(10)
    logits = torch.randn(4, 3, generator=g, dtype=D64, requires_grad=True)
    source = torch.randn(4, 6, generator=g, dtype=D64, requires_grad=True)
    rel = torch.softmax(torch.randn(3, 6, generator=g, dtype=D64), 1)
    labels = torch.tensor([0, 2, 2, 1])
    loss, ce, sce = co_tuning_loss(logits, source, labels, rel, trade_off=2.3)
    expected_sce = 0.0
    for row, t in zip(source.detach().tolist(), labels.tolist()):
        top = max(row)
        lse = top + math.log(sum(math.exp(v - top) for v in row))
        expected_sce -= sum(rel[t, s].item() * (row[s] - lse) for s in range(6))
    expected_sce /= 4
    assert sce.item() == pytest.approx(expected_sce, rel=1e-12)
    assert loss.item() == pytest.approx(_ce_statement(logits.detach(), labels) + 2.3 * expected_sce, rel=1e-12)
    loss.backward()
    # d/dz_s of CE_soft = softmax(z) - target (the target rows sum to 1), over the batch mean, times lambda
    torch.testing.assert_close(source.grad, 2.3 * (torch.softmax(source.detach(), 1) - rel[labels]) / 4)
    torch.testing.assert_close(logits.grad, (torch.softmax(logits.detach(), 1) - torch.eye(3, dtype=D64)[labels]) / 4)


def test_co_tuning_loss_in_bf16_is_computed_in_float32():
    logits = torch.randn(3, 2).to(torch.bfloat16)
    source = torch.randn(3, 1000).to(torch.bfloat16)
    loss, _, _ = co_tuning_loss(logits, source, torch.tensor([0, 1, 1]), torch.full((2, 1000), 1e-3), 1.0)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
