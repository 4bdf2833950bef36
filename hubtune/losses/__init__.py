"""Pure-torch loss modules: Core-tuning, AdaptiveMix, and the fine-tuning regularisers L2-SP, BSS, DELTA and
Co-Tuning."""

from __future__ import annotations

from hubtune._lazy import lazy_exports

# imported when first used (PEP 562): hubtune.losses.adaptive_mix_settings is torch-free, and importing it (for a
# config) must not import torch through this package
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(("CoreTuningDraws", "CoreTuningLoss", "CoreTuningLossOutput", "CoreTuningSettings", "build_hard_pair_rows",
                     "focal_supcon_loss", "mine_hard_pairs", "sample_core_tuning_draws", "soft_label_cross_entropy"),
                    "hubtune.losses.core_tuning"),
    **dict.fromkeys(("AdaptiveMix", "AdaptiveMixClassifierLoss", "AdaptiveMixLossOutput", "AdaptiveMixOutput",
                     "MixDraws", "features_are_batch_coupled", "mix_pairs", "sample_mix_coefficients",
                     "shrinkage_loss"), "hubtune.losses.adaptive_mix"),
    "AdaptiveMixSettings": "hubtune.losses.adaptive_mix_settings",
    **dict.fromkeys(("L2SPLoss", "L2SPLossOutput", "l2_sp_penalty", "squared_distance"), "hubtune.losses.l2_sp"),
    **dict.fromkeys(("BSSLoss", "batch_spectral_shrinkage"), "hubtune.losses.bss"),
    **dict.fromkeys(("DeltaLoss", "attention_from_importance", "channels_first", "delta_feature_penalty"),
                   "hubtune.losses.delta"),
    **dict.fromkeys(("CoTuningLoss", "accumulate_relationship", "category_relationship", "co_tuning_loss"),
                    "hubtune.losses.co_tuning"),
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
