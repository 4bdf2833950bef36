"""Pure-torch loss modules: Core-tuning (and AdaptiveMix)."""

from hubtune.losses.core_tuning import (
    CoreTuningDraws,
    CoreTuningLoss,
    CoreTuningLossOutput,
    CoreTuningSettings,
    build_hard_pair_rows,
    focal_supcon_loss,
    mine_hard_pairs,
    sample_core_tuning_draws,
    soft_label_cross_entropy,
)
from hubtune.losses.adaptive_mix import (
    AdaptiveMix,
    AdaptiveMixClassifierLoss,
    AdaptiveMixLossOutput,
    AdaptiveMixOutput,
    MixDraws,
    features_are_batch_coupled,
    mix_pairs,
    sample_mix_coefficients,
    shrinkage_loss,
)
