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
    attention_from_importance,
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


def _attention_statement(importance):
    """DELTA train.py:111-116: (w - mean(w)) / std(w) with numpy's population std, then softmax(z / 5)."""
    w = np.asarray(importance, dtype=np.float64)
    z = (w - w.mean()) / w.std()
    e = np.exp(z / 5 - (z / 5).max())
    return e / e.sum()


@pytest.mark.parametrize("channels", [2, 7, 1000])
def test_delta_attention_is_the_softmax_of_standardised_importance_at_temperature_5(channels):
    importance = torch.randn(channels, generator=_g(channels), dtype=D64) * 0.3 + 0.1
    att = attention_from_importance(importance)
    np.testing.assert_allclose(att.numpy(), _attention_statement(importance.numpy()), rtol=1e-6, atol=1e-9)
    assert att.dtype == torch.float32 and att.sum().item() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("importance", [[0.2, 0.2, 0.2], [0.5]])
def test_delta_attention_of_equally_important_channels_is_uniform(importance):
    att = attention_from_importance(torch.tensor(importance, dtype=D64))
    torch.testing.assert_close(att, torch.full((len(importance),), 1 / len(importance)))


def _penalty_statement(maps, starts, attentions):
    """DELTA train.py:167-178 with plain loops: sum over layers of 0.5 * sum_b sum_c C * a_c * ||fm - fm0||^2 / (H W)."""
    total = 0.0
    for fm, fm0, att in zip(maps, starts, attentions):
        b_, c_, positions = len(fm), len(fm[0]), len(fm[0][0])
        for b in range(b_):
            for c in range(c_):
                squared = sum((x - x0) ** 2 for x, x0 in zip(fm[b][c], fm0[b][c]))
                total += 0.5 * c_ * att[c] * squared / positions
    return total


def test_delta_feature_penalty_and_gradient_match_the_statement_over_cnn_maps_and_tokens():
    g = _g(7)
    shapes = [(3, 4, 5, 2), (3, 6, 3)]  # a (B, C, H, W) map and (B, tokens, D) tokens: two layers at once
    maps = [torch.randn(s, generator=g, dtype=D64, requires_grad=True) for s in shapes]
    starts = [torch.randn(s, generator=g, dtype=D64) for s in shapes]
    cf = [channels_first(m) for m in maps]
    cf0 = [channels_first(m) for m in starts]
    atts = [torch.softmax(torch.randn(c.shape[1], generator=g, dtype=D64), 0) for c in cf]
    loss = delta_feature_penalty(cf, cf0, atts)
    expected = _penalty_statement([c.detach().tolist() for c in cf], [c.tolist() for c in cf0], [a.tolist() for a in atts])
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    for m, m0, c, att in zip(maps, starts, cf, atts):
        channels, positions = c.shape[1], c.shape[2]
        weight = att * channels / positions  # d/dfm of 0.5 * C a_c ||d||^2 / P = C a_c d / P
        shaped = weight.view(1, -1, 1, 1) if m.ndim == 4 else weight.view(1, 1, -1)
        torch.testing.assert_close(m.grad, (shaped * (m.detach() - m0)).to(m.grad.dtype), rtol=1e-5, atol=1e-7)


def test_delta_penalty_sums_over_the_batch_not_a_mean():
    fm, fm0 = torch.ones(4, 2, 3), torch.zeros(4, 2, 3)
    att = [torch.tensor([0.5, 0.5])]
    one = delta_feature_penalty([fm[:1]], [fm0[:1]], att)
    assert delta_feature_penalty([fm], [fm0], att).item() == pytest.approx(4 * one.item())


def test_delta_penalty_of_bf16_maps_is_float32():
    fm = torch.randn(2, 3, 4, dtype=torch.bfloat16)
    out = delta_feature_penalty([fm], [torch.zeros_like(fm)], [torch.full((3,), 1 / 3)])
    assert out.dtype == torch.float32
    assert out.item() == pytest.approx(0.5 * 3 / 4 * (fm.float() ** 2).sum().item() / 3, rel=1e-5)


def test_delta_loss_adds_cross_entropy_the_weighted_maps_and_head_l2():
    g = _g(8)
    head = torch.nn.Linear(4, 3).double()
    fm = torch.randn(2, 4, 2, 2, generator=g, dtype=D64, requires_grad=True)
    fm0 = torch.randn(2, 4, 2, 2, generator=g, dtype=D64)
    att = torch.softmax(torch.randn(4, generator=g, dtype=D64), 0)
    labels = torch.tensor([1, 2])
    logits = head(fm.mean((2, 3)))
    loss, ce, feat, hl = DeltaLoss(alpha=0.5, beta=0.2)(logits, labels, [channels_first(fm)], [channels_first(fm0)],
                                                        [att], list(head.parameters()))
    expected_feat = 0.5 * _penalty_statement([channels_first(fm).detach().tolist()], [channels_first(fm0).tolist()],
                                             [att.tolist()])
    expected_head = 0.1 * float(sum((p.detach() ** 2).sum() for p in head.parameters()))
    assert feat.item() == pytest.approx(expected_feat, rel=1e-6) and hl.item() == pytest.approx(expected_head, rel=1e-6)
    assert loss.item() == pytest.approx(_ce_statement(logits.detach(), labels) + expected_feat + expected_head, rel=1e-6)
    loss.backward()
    torch.testing.assert_close(head.bias.grad, 0.2 * head.bias.detach() + (torch.softmax(logits.detach(), 1) - torch.eye(3, dtype=D64)[labels]).mean(0))


def test_delta_starting_maps_get_no_gradient():
    fm = torch.randn(2, 3, 4, requires_grad=True)
    fm0 = torch.randn(2, 3, 4, requires_grad=True)
    delta_feature_penalty([fm], [fm0], [torch.full((3,), 1 / 3)]).backward()
    assert fm.grad is not None and fm0.grad is None


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
