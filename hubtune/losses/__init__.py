"""Pure-torch loss modules: Core-tuning, AdaptiveMix, and the fine-tuning regularisers L2-SP, BSS, DELTA and
Co-Tuning."""

from hubtune.losses.core_tuning import (
    CoreTuningDraws,
    CoreTuningLoss,
    CoreTuningLossOutput,
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
from hubtune.losses.l2_sp import L2SPLoss, L2SPLossOutput, l2_sp_penalty, squared_distance
from hubtune.losses.bss import BSSLoss, batch_spectral_shrinkage
from hubtune.losses.delta import DeltaLoss, channel_attention, channels_first, delta_feature_penalty
from hubtune.losses.co_tuning import CoTuningLoss, accumulate_relationship, category_relationship, co_tuning_loss
