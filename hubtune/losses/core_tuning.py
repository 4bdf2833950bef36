"""Core-tuning: cross-entropy plus a focal supervised-contrastive regulariser on generated hard pairs.

Zhang, Hooi, Hu, Liang, Feng, "Unleashing the Power of Contrastive Self-Supervised Visual Models via
Contrast-Regularized Fine-Tuning", NeurIPS 2021 (arXiv 2102.06605). docs/methods.md, section 1, states
the maths this file implements.

Layout: the random draws of a step, the pieces (mining, hard-pair rows, soft-label cross-entropy, focal
SupCon) as small functions, then `CoreTuningLoss`, which owns no parameters: the classifier and projector
heads are passed to `forward`.

Soft labels. Every row's label mixes at most two classes, so it is stored as a canonical triple
(class_a, class_b, weight_a) with class_a <= class_b and weight_a the weight of class_a; a pure label
(same class twice, or a weight of 0 or 1) collapses to (c, c, 1.0). Two rows have identical soft labels
exactly when their triples are equal elementwise, for any number of classes, with no dense one-hot and
no host-device sync.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hubtune.distributed import all_gather_no_grad, all_gather_with_grad, is_distributed
from hubtune.errors import ConfigError
from hubtune.losses._random import sample_symmetric_beta

__all__ = [
    "PRESETS",
    "CoreTuningDraws",
    "CoreTuningLoss",
    "CoreTuningLossOutput",
    "CoreTuningSettings",
    "FocalSupConOutput",
    "HardPairIndices",
    "HardPairRows",
    "build_hard_pair_rows",
    "canonical_soft_labels",
    "focal_supcon_loss",
    "mine_hard_pairs",
    "sample_core_tuning_draws",
    "soft_label_cross_entropy",
]

_NORMALISATIONS = ("positives", "rows")


# ----------------------------------------------------------------------------------------------------
# Settings: defaults and validation, stated once for the loss and the registered method


@dataclass
class CoreTuningSettings:
    """Core-tuning's loss settings: the one statement of their defaults and valid ranges.

    :class:`CoreTuningLoss` validates its arguments here, and the registered method's config
    (:class:`hubtune.methods.core_tuning.CoreTuningConfig`) derives from this class, so both share the
    defaults and the checks. A bad value raises :class:`~hubtune.errors.ConfigError` (a ``ValueError``).

    Sources: Vanint/Core-tuning f70e1bf, Core-tuning.py unless a file is named.

    Args:
        preset: ``"paper"`` (the method as published) or ``"reference"`` (the public script's semantics).
        eta: weight of the focal supervised-contrastive term (``L = L_ce + eta * L_con``). 0.03 is hubtune's,
            NOT the authors' value: the script's ``--eta_weight`` defaults to 10.0 (:49, used at :429) and its
            README trains with 0.1 (README.md:35), both under the script's normalisation of L_i by the number of
            rows (:262-269, the ``"reference"`` preset) rather than by |P(i)| (the ``"paper"`` preset), so that
            the same eta weighs the term far less there. 0.03 was chosen on seeds 0-4 of two few-label tasks and
            confirmed on seeds 5-9 (README, Evidence; benchmarks/results/compare/{digits,animals}-k10/sweep.md).
        temperature: contrastive temperature tau; 0.07: ``temperature = base_temperature = 0.07`` (:216-217).
        alpha: Beta(alpha, alpha) of the mixing coefficients; 1.0: ``--mixup_alpha`` default (:52; README.md:35
            passes 1), drawn at :176 and :196.
        lam_min: lower bound of the partner's weight in the semi-hard negative rows; 0.8: ``if lam[i] <= 0.8:
            lam[i] = 0.8`` (:177-179).
    """

    PRESETS: ClassVar[tuple[str, ...]] = ("paper", "reference")
    preset: str = "paper"
    eta: float = 0.03
    temperature: float = 0.07
    alpha: float = 1.0
    lam_min: float = 0.8

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError naming the first bad setting."""
        _check_preset(self.preset)
        if not self.eta >= 0:
            raise ConfigError(f"eta (the contrastive weight) must be >= 0, got {self.eta}.")
        if not self.temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}.")
        _check_draw_settings(self.alpha, self.lam_min)


PRESETS = CoreTuningSettings.PRESETS


def _check_preset(preset: str) -> None:
    if preset not in PRESETS:
        raise ConfigError(f"unknown Core-tuning preset {preset!r}; choose one of {PRESETS}.")


def _check_draw_settings(alpha: float, lam_min: float) -> None:
    if not alpha > 0:
        raise ConfigError(f"alpha (the Beta(alpha, alpha) parameter) must be > 0, got {alpha}.")
    if not 0.0 <= lam_min <= 1.0:
        raise ConfigError(f"lam_min must lie in [0, 1], got {lam_min}.")


_DEFAULTS = CoreTuningSettings()


# ----------------------------------------------------------------------------------------------------
# Random draws


@dataclass
class CoreTuningDraws:
    """The random draws of one step; pass them to `CoreTuningLoss.forward` to make a step reproducible.

    permutation: (B,) long, the partner p(i) of the semi-hard negative rows.
    lam: (B,) float in [lam_min, 1], the partner's weight in those rows (already raised to lam_min).
    mu: (B,) float in [0, 1], the hard positive's weight in the hard-positive rows.
    """

    permutation: Tensor
    lam: Tensor
    mu: Tensor

    def to(self, device) -> "CoreTuningDraws":
        return CoreTuningDraws(
            permutation=self.permutation.to(device=device, dtype=torch.long),
            lam=self.lam.to(device=device, dtype=torch.float32),
            mu=self.mu.to(device=device, dtype=torch.float32),
        )


def sample_core_tuning_draws(
    batch_size: int, alpha: float = _DEFAULTS.alpha, lam_min: float = _DEFAULTS.lam_min, device=None
) -> CoreTuningDraws:
    """Draw p ~ uniform permutation, lam = max(Beta(alpha, alpha), lam_min), mu ~ Beta(alpha, alpha).

    Everything is sampled on `device` with no host-device sync, and traces into one graph under
    `torch.compile`, also with a dynamic batch size (see :func:`hubtune.losses._random.sample_symmetric_beta`).
    """
    _check_draw_settings(alpha, lam_min)
    lam = sample_symmetric_beta(alpha, (batch_size,), device=device).clamp(min=lam_min)
    mu = sample_symmetric_beta(alpha, (batch_size,), device=device)
    permutation = torch.randperm(batch_size, device=device)
    return CoreTuningDraws(permutation=permutation, lam=lam, mu=mu)


# ----------------------------------------------------------------------------------------------------
# Building blocks


class HardPairIndices(NamedTuple):
    """hard_positive[i] = hp(i), hard_negative[i] = hn(i): indices into the micro-batch, (B,) long."""

    hard_positive: Tensor
    hard_negative: Tensor


class HardPairRows(NamedTuple):
    """The 3B rows (clean, semi-hard negatives, hard positives) and their canonical soft labels."""

    rows: Tensor
    class_a: Tensor
    class_b: Tensor
    weight_a: Tensor


class FocalSupConOutput(NamedTuple):
    """The focal SupCon loss and what it saw: sum_i |P(i)| and the number of anchors with |P(i)| > 0."""

    loss: Tensor
    num_positive_pairs: Tensor
    num_anchors_with_positives: Tensor


@torch.no_grad()
def mine_hard_pairs(features: Tensor, labels: Tensor, preset: str = "paper") -> HardPairIndices:
    """Mine hp(i) and hn(i) from the cosine similarities of `features` (B, D); no gradient.

    paper: hp(i) = the least similar sample of i's class other than i (i itself when there is none);
        hn(i) = the most similar sample of another class (i itself when the batch holds no other class).
    reference (the public script, reproduced exactly: Core-tuning.py:160-168 and :187-193): with S the cosine
        matrix,
        hp(i) = first index of the minimum of S[i, j] * [y_j == y_i and j != i] over j, replaced by i
        when that index is 0; hn(i) = first index of the maximum of S[i, j] * [y_j != y_i].
        The zeros win: with positive cosines (pooled ReLU features) hp(i) is the first of {i} and the
        other-class samples, so the "hard positive" is the anchor or a negative, and hn(i) is the paper's
        hn(i) when another class is present (index 0 when none is).
    """
    _check_preset(preset)
    unit = F.normalize(features.detach().float(), dim=1)
    similarity = unit @ unit.T
    batch_size = features.shape[0]
    index = torch.arange(batch_size, device=features.device)
    same_class = labels[:, None] == labels[None, :]
    not_self = index[:, None] != index[None, :]
    positive = same_class & not_self
    negative = ~same_class

    if preset == "reference":
        hard_positive = (similarity * positive).argmin(dim=1)
        hard_positive = torch.where(hard_positive == 0, index, hard_positive)
        hard_negative = (similarity * negative).argmax(dim=1)
        return HardPairIndices(hard_positive, hard_negative)

    # Python-scalar fills: a 0-dim tensor made from a float would be a host-to-device copy on GPUs.
    hard_positive = torch.where(positive, similarity, float("inf")).argmin(dim=1)
    hard_positive = torch.where(positive.any(dim=1), hard_positive, index)
    hard_negative = torch.where(negative, similarity, float("-inf")).argmax(dim=1)
    hard_negative = torch.where(negative.any(dim=1), hard_negative, index)
    return HardPairIndices(hard_positive, hard_negative)


def canonical_soft_labels(
    class_1: Tensor, weight_1: Tensor, class_2: Tensor, weight_2: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Canonical (class_a, class_b, weight_a) of the label weight_1 * Y[class_1] + weight_2 * Y[class_2].

    class_a <= class_b; a pure label (equal classes, or one weight <= 0) becomes (c, c, 1.0). The
    weights are taken as given (not recomputed as 1 - w) so equal mixing coefficients give bit-equal
    triples.
    """
    first_is_a = class_1 <= class_2
    class_a = torch.minimum(class_1, class_2)
    class_b = torch.maximum(class_1, class_2)
    weight_a = torch.where(first_is_a, weight_1, weight_2)
    weight_b = torch.where(first_is_a, weight_2, weight_1)
    pure_a = (class_a == class_b) | (weight_b <= 0)
    pure_b = ~pure_a & (weight_a <= 0)
    pure = pure_a | pure_b
    new_a = torch.where(pure_b, class_b, class_a)
    new_b = torch.where(pure_a, class_a, class_b)
    new_weight = torch.where(pure, torch.ones_like(weight_a), weight_a)
    return new_a, new_b, new_weight


class HardPairPlan(NamedTuple):
    """How the 2B mixed rows come from the micro-batch, and the soft labels of all 3B rows.

    Mixed row r = coef[r] * h[first[r]] + (1 - coef[r]) * h[second[r]] (r < B: semi-hard negatives,
    r >= B: hard positives); class_a / class_b / weight_a cover the 3B rows [clean; mixed].
    """

    first: Tensor
    second: Tensor
    coef: Tensor
    class_a: Tensor
    class_b: Tensor
    weight_a: Tensor


def plan_hard_pairs(features: Tensor, labels: Tensor, draws: CoreTuningDraws, preset: str = "paper") -> HardPairPlan:
    """Mine the pairs and draw up the 2B mixed rows (see :class:`HardPairPlan`); no gradient involved."""
    _check_preset(preset)
    hard_positive, hard_negative = mine_hard_pairs(features, labels, preset)
    permutation = draws.permutation
    lam = draws.lam.float()
    mu = draws.mu.float()
    ones = torch.ones_like(lam)
    negative_labels = canonical_soft_labels(labels, 1 - lam, labels[permutation], lam)
    positive_labels = canonical_soft_labels(labels[hard_positive], mu, labels[hard_negative], 1 - mu)
    index = torch.arange(labels.shape[0], device=labels.device)
    return HardPairPlan(
        first=torch.cat([index, hard_positive]),
        second=torch.cat([permutation, hard_negative]),
        coef=torch.cat([1 - lam, mu]),
        class_a=torch.cat([labels, negative_labels[0], positive_labels[0]]),
        class_b=torch.cat([labels, negative_labels[1], positive_labels[1]]),
        weight_a=torch.cat([ones, negative_labels[2], positive_labels[2]]),
    )


def mix_rows(x: Tensor, plan: HardPairPlan) -> Tensor:
    """The 2B mixed rows of `x` (B, ...) by `plan`: coef * x[first] + (1 - coef) * x[second]."""
    coef = plan.coef.to(x.dtype).view(-1, *([1] * (x.dim() - 1)))
    return coef * x[plan.first] + (1 - coef) * x[plan.second]


def build_hard_pair_rows(
    features: Tensor, labels: Tensor, draws: CoreTuningDraws, preset: str = "paper"
) -> HardPairRows:
    """The 3B float32 rows [clean; semi-hard negatives; hard positives] and their soft-label triples.

    clean: h_i with label y_i (detached from the backbone in the reference preset);
    semi-hard negative: (1 - lam_i) h_i + lam_i h_p(i), label mixed the same way;
    hard positive: mu_i h_hp(i) + (1 - mu_i) h_hn(i), label mixed the same way.
    """
    h = features.float()
    plan = plan_hard_pairs(h, labels, draws, preset)
    clean = h.detach() if preset == "reference" else h
    rows = torch.cat([clean, mix_rows(h, plan)], dim=0)
    return HardPairRows(rows, plan.class_a, plan.class_b, plan.weight_a)


def _leading_linear(head: nn.Module) -> tuple[nn.Linear | None, nn.Module]:
    """(first layer, the rest) when `head` starts with a plain nn.Linear, else (None, head)."""
    if type(head) is nn.Linear:
        return head, nn.Identity()
    if isinstance(head, nn.Sequential) and len(head) > 0 and type(head[0]) is nn.Linear:
        return head[0], head[1:]
    return None, head


def head_on_rows(head: nn.Module, features: Tensor, plan: HardPairPlan, detach_clean: bool = False) -> Tensor:
    """``head`` applied to the 3B rows [clean; mixed] of :func:`build_hard_pair_rows`, as float32.

    When the head starts with a plain ``nn.Linear`` that layer runs on the B clean rows and its outputs are
    mixed instead: W (c x + (1 - c) y) + b = c (W x + b) + (1 - c) (W y + b) because the two weights sum to 1.
    The result is the same up to rounding, and the widest layer of the projector does a third of the work.
    Rows are cast to the head's parameter dtype.
    """
    dtype = _parameter_dtype(head)
    h = features.float()
    first, rest = _leading_linear(head)
    if first is None:
        clean = h.detach() if detach_clean else h
        return head(torch.cat([clean, mix_rows(h, plan)]).to(dtype)).float()
    projected = first(h.to(dtype))
    clean = first(h.detach().to(dtype)) if detach_clean else projected
    return rest(torch.cat([clean, mix_rows(projected, plan)])).float()


def soft_label_cross_entropy(
    logits: Tensor, class_a: Tensor, class_b: Tensor, weight_a: Tensor
) -> Tensor:
    """Mean over rows of -(w_a log softmax(logits)[a] + (1 - w_a) log softmax(logits)[b]), in float32."""
    log_probs = F.log_softmax(logits.float(), dim=-1)
    log_prob_a = log_probs.gather(1, class_a[:, None]).squeeze(1)
    log_prob_b = log_probs.gather(1, class_b[:, None]).squeeze(1)
    weight_a = weight_a.float()
    return -(weight_a * log_prob_a + (1 - weight_a) * log_prob_b).mean()


def focal_supcon_loss(
    z: Tensor,
    class_a: Tensor,
    class_b: Tensor,
    weight_a: Tensor,
    temperature: float = 0.07,
    normalisation: str = "positives",
) -> FocalSupConOutput:
    """Focal supervised-contrastive loss over the rows of `z` (N, d), expected L2-normalised.

    Positives: rows j != i whose soft-label triples equal row i's. With
    log p_ij = z_i.z_j / tau - logsumexp_{k != i} z_i.z_k / tau,
    L_i = -(1 / n_i) sum_{j in P(i)} (1 - p_ij) log p_ij where n_i = |P(i)| ("positives", the paper)
    or n_i = N ("rows", the reference script: ``(weight * mask * log_prob).mean(1)``, Core-tuning.py:262, then
    ``sum() / N_nonzero`` over the anchors with a positive, :268-269); the loss is the mean of L_i over anchors with
    |P(i)| > 0, and exactly 0 (with zero, finite gradients) when there are none.
    """
    if normalisation not in _NORMALISATIONS:
        raise ConfigError(f"unknown normalisation {normalisation!r}; choose one of {_NORMALISATIONS}.")
    num_rows = z.shape[0]
    z = z.float()
    logits = z @ z.T / temperature
    index = torch.arange(num_rows, device=z.device)
    is_self = index[:, None] == index[None, :]
    # The diagonal stays finite in log_prob (only the logsumexp excludes it) so that masking it out by
    # multiplication leaves finite gradients; a -inf there would turn 0 * inf into NaN in backward.
    log_normaliser = torch.logsumexp(logits.masked_fill(is_self, float("-inf")), dim=1, keepdim=True)
    log_prob = logits - log_normaliser
    focal_log_prob = (1 - log_prob.exp()) * log_prob

    positive = (
        (class_a[:, None] == class_a[None, :])
        & (class_b[:, None] == class_b[None, :])
        & (weight_a[:, None] == weight_a[None, :])
        & ~is_self
    )
    positive_weight = positive.to(log_prob.dtype)
    num_positives = positive_weight.sum(dim=1)
    summed = (focal_log_prob * positive_weight).sum(dim=1)
    if normalisation == "positives":
        per_anchor = -summed / num_positives.clamp(min=1)
    else:
        per_anchor = -summed / num_rows
    has_positive = num_positives > 0
    num_anchors = has_positive.sum()
    loss = (per_anchor * has_positive).sum() / num_anchors.clamp(min=1)
    return FocalSupConOutput(loss, positive.sum(), num_anchors)


def _parameter_dtype(module: nn.Module) -> torch.dtype:
    for parameter in module.parameters():
        if parameter.is_floating_point():
            return parameter.dtype
    return torch.float32


# ----------------------------------------------------------------------------------------------------
# The loss


@dataclass
class CoreTuningLossOutput:
    """What `CoreTuningLoss.forward` returns; every float tensor is float32.

    loss: ce_loss + eta * contrastive_loss (0-dim).
    ce_loss: boundary-smoothing soft-label cross-entropy, mean over this process's 3B rows.
    contrastive_loss: focal SupCon over the rows it saw (all processes' rows when gathered).
    num_positive_pairs: sum_i |P(i)| over those rows (int64).
    num_anchors_with_positives: number of rows with |P(i)| > 0 (int64).
    logits: classifier logits of the B clean rows (still attached to the graph; detach for metrics).
    """

    loss: Tensor
    ce_loss: Tensor
    contrastive_loss: Tensor
    num_positive_pairs: Tensor
    num_anchors_with_positives: Tensor
    logits: Tensor


class CoreTuningLoss(nn.Module):
    """Core-tuning loss: soft-label CE on 3B generated rows + eta * focal SupCon on their projections.

    Holds no parameters: `forward(features, labels, classifier, projector, draws=None)` takes the pooled
    backbone features (B, D), integer labels (B,), the classifier head (D -> C) and the projector head
    (D -> d, e.g. Linear -> ReLU -> Linear); the projector output is L2-normalised here. The number of
    classes C is the classifier's output size.

    preset="paper" (default) is docs/methods.md section 1 as written: clean rows keep their gradient;
    hp(i) = least similar same-class sample other than i (i when none), hn(i) = most similar
    other-class sample (i when none); L_i normalised by |P(i)|.

    preset="reference" (`CoreTuningLoss.reference()`) reproduces the public script's semantics (Vanint/Core-tuning
    f70e1bf, Core-tuning.py) so that its published hyper-parameters carry over. Differences from "paper":
    - the clean rows are detached from the backbone (``list_f = features.clone().detach()``, :157; the heads
      still get their gradient; the backbone learns only through the mixed rows);
    - mining (see `mine_hard_pairs`, :187-193): hp(i) = first argmin over j of cos(h_i, h_j) * [y_j == y_i,
      j != i], replaced by i when it is 0, which with positive cosines is the anchor or a negative;
      hn(i) = first argmax of cos(h_i, h_j) * [y_j != y_i] (index 0 when the batch has one class);
    - L_i is divided by the number of rows N (3B, or all processes' rows when gathered) instead of |P(i)|
      (:262-269), so the same eta weighs the contrastive term far less than in the paper preset. The script's
      ``--eta_weight`` defaults to 10.0 (:49) and its README trains with 0.1 (README.md:35): pass the one you
      want explicitly (hubtune's default 0.03 is measured with the paper preset).
    Kept out of both presets on purpose: the script codes soft labels as powers of ten (:226-233), which makes
    different labels collide from C > 18 on; both presets here compare exact (class_a, class_b, weight_a)
    triples. The script's extra backbone forward per step, used only for logging (:432), is not done.

    Precision: autocast is disabled inside; rows are built and all similarity, softmax and loss maths run
    in float32; rows are cast to each head's parameter dtype for the head call and the head's output is
    cast back to float32. Returned tensors are float32.

    Several processes: when `gather_distributed` is true and torch.distributed runs more than one
    process, the contrastive term sees every process's rows (gathered with gradient) and every process
    computes the same, full contrastive loss; the CE term stays this process's mean. Every process must
    then have the same micro-batch size (drop the last incomplete batch). Mining and the draws stay per
    micro-batch.

    Host syncs: the forward pass reads nothing back to the host except the label-range check, which
    costs one host read per step; set `validate_labels = False` to skip it on the hot path (an
    out-of-range label then fails inside the gather, on CUDA as an opaque device-side assert). Likewise
    `check_gather_shapes = False` skips the cross-process shape check (one tiny collective + host read)
    done before gathering.
    """

    def __init__(
        self,
        eta: float = _DEFAULTS.eta,
        temperature: float = _DEFAULTS.temperature,
        alpha: float = _DEFAULTS.alpha,
        lam_min: float = _DEFAULTS.lam_min,
        preset: str = _DEFAULTS.preset,
        gather_distributed: bool = True,
    ):
        super().__init__()
        settings = CoreTuningSettings(preset=preset, eta=eta, temperature=temperature, alpha=alpha, lam_min=lam_min)
        self.eta = float(settings.eta)
        self.temperature = float(settings.temperature)
        self.alpha = float(settings.alpha)
        self.lam_min = float(settings.lam_min)
        self.preset = settings.preset
        self.gather_distributed = bool(gather_distributed)
        self.validate_labels = True
        self.check_gather_shapes = True

    @classmethod
    def from_settings(cls, settings: CoreTuningSettings, gather_distributed: bool = True) -> "CoreTuningLoss":
        """The loss for `settings` (a :class:`CoreTuningSettings`, e.g. the method's config)."""
        return cls(eta=settings.eta, temperature=settings.temperature, alpha=settings.alpha,
                   lam_min=settings.lam_min, preset=settings.preset, gather_distributed=gather_distributed)

    @classmethod
    def reference(cls, **overrides) -> "CoreTuningLoss":
        """The public script's semantics (see the class docstring); keyword arguments override defaults."""
        overrides.setdefault("preset", "reference")
        return cls(**overrides)

    def extra_repr(self) -> str:
        return (
            f"preset={self.preset!r}, eta={self.eta}, temperature={self.temperature}, "
            f"alpha={self.alpha}, lam_min={self.lam_min}, gather_distributed={self.gather_distributed}"
        )

    def sample_draws(self, batch_size: int, device=None) -> CoreTuningDraws:
        """The random draws of one step with this loss's alpha and lam_min."""
        return sample_core_tuning_draws(batch_size, self.alpha, self.lam_min, device=device)

    def forward(
        self,
        features: Tensor,
        labels: Tensor,
        classifier: nn.Module,
        projector: nn.Module,
        draws: CoreTuningDraws | None = None,
    ) -> CoreTuningLossOutput:
        batch_size = self._check_inputs(features, labels)
        if draws is None:
            draws = self.sample_draws(batch_size, device=features.device)
        else:
            self._check_draws(draws, batch_size)
            draws = draws.to(features.device)

        device_type = features.device.type
        if torch.amp.is_autocast_available(device_type):
            autocast_off = torch.amp.autocast(device_type=device_type, enabled=False)
        else:
            autocast_off = torch.autocast(device_type="cpu", enabled=False)
        with autocast_off:
            plan = plan_hard_pairs(features.float(), labels, draws, self.preset)
            class_a, class_b, weight_a = plan.class_a, plan.class_b, plan.weight_a
            detach_clean = self.preset == "reference"
            logits = head_on_rows(classifier, features, plan, detach_clean)
            if self.validate_labels:
                self._check_label_range(labels, logits.shape[-1])
            ce_loss = soft_label_cross_entropy(logits, class_a, class_b, weight_a)

            projections = head_on_rows(projector, features, plan, detach_clean)
            z = F.normalize(projections, dim=1)
            if self.gather_distributed and is_distributed():
                z, class_a, class_b, weight_a = self._gather(z, class_a, class_b, weight_a)
            contrast = focal_supcon_loss(
                z,
                class_a,
                class_b,
                weight_a,
                temperature=self.temperature,
                normalisation="rows" if self.preset == "reference" else "positives",
            )
            loss = ce_loss + self.eta * contrast.loss
        return CoreTuningLossOutput(
            loss=loss,
            ce_loss=ce_loss,
            contrastive_loss=contrast.loss,
            num_positive_pairs=contrast.num_positive_pairs,
            num_anchors_with_positives=contrast.num_anchors_with_positives,
            logits=logits[:batch_size],
        )

    def _gather(self, z: Tensor, class_a: Tensor, class_b: Tensor, weight_a: Tensor):
        # Every process computes the same, full contrastive loss over all processes' rows. The gather's
        # backward sums the gradient of the gathered z over processes and keeps this process's slice:
        # that is world_size x d(L_con)/d(z_local), since every process's identical loss sends the same
        # gradient. DDP then averages parameter gradients over processes (divides by world_size), so
        # the backbone gets exactly d(L_con)/d(theta) of one process holding all the rows. The CE term is
        # a local mean, and DDP's average of local means is the mean over all rows (equal batch sizes).
        z = all_gather_with_grad(z, check_shapes=self.check_gather_shapes)
        # One small collective for the labels: both classes and the float32 weight's bits as int64.
        packed = torch.stack(
            [class_a, class_b, weight_a.float().view(torch.int32).to(torch.int64)], dim=1
        )
        packed = all_gather_no_grad(packed, check_shapes=False)
        weight_a = packed[:, 2].to(torch.int32).view(torch.float32)
        return z, packed[:, 0], packed[:, 1], weight_a

    @staticmethod
    def _check_inputs(features: Tensor, labels: Tensor) -> int:
        if features.dim() != 2:
            raise ConfigError(
                f"features must be pooled backbone features of shape (batch, dim), got shape "
                f"{tuple(features.shape)}"
            )
        if not features.is_floating_point():
            raise ConfigError(f"features must be a floating tensor, got dtype {features.dtype}")
        if labels.dim() != 1 or labels.shape[0] != features.shape[0]:
            raise ConfigError(
                f"labels must be a 1-D tensor with one class index per row of features "
                f"({features.shape[0]}), got shape {tuple(labels.shape)}"
            )
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise ConfigError(
                f"labels must be integer class indices, got dtype {labels.dtype}; soft or one-hot "
                "labels are not accepted (the loss builds its own soft labels)"
            )
        if features.shape[0] == 0:
            raise ConfigError("the batch is empty: Core-tuning needs at least one sample")
        return features.shape[0]

    @staticmethod
    def _check_draws(draws: CoreTuningDraws, batch_size: int) -> None:
        for name in ("permutation", "lam", "mu"):
            shape = tuple(getattr(draws, name).shape)
            if shape != (batch_size,):
                raise ConfigError(
                    f"draws.{name} must have shape ({batch_size},) to match the batch, got {shape}"
                )

    @staticmethod
    def _check_label_range(labels: Tensor, num_classes: int) -> None:
        if bool(((labels < 0) | (labels >= num_classes)).any()):
            raise ConfigError(
                f"labels must lie in [0, {num_classes}) (the classifier has {num_classes} outputs), "
                f"got values from {int(labels.min())} to {int(labels.max())}; check the label "
                "mapping or the classifier's number of classes"
            )
