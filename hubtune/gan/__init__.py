"""GANs with AdaptiveMix: models, an Accelerate training loop, FID/KID, and generators on the Hub.

    from hubtune.gan import GANTrainingConfig, Generator, train_gan

    config = GANTrainingConfig.from_options(dataset="digits", arch="dcgan", max_steps=500, output_dir="gan-digits")
    result = train_gan(config)
    generator = Generator.from_pretrained("gan-digits")   # the output root holds the final (EMA) generator
    images = generator.generate(16, seed=0)
    generator.push_to_hub("ORG/NAME")                     # config.json, model.safetensors, README.md card, samples.png

Architectures are registered in :data:`hubtune.gan.archs.ARCHITECTURES` (``dcgan``, ``resnet``, ``stylegan2``, and
the timm-backbone discriminator); ``Generator.from_pretrained`` asks the registry for the class of a saved ``arch``.
DiffAugment / ADA in :mod:`hubtune.gan.augment`; a timm backbone as the discriminator with
:func:`build_timm_discriminator`.

The names below are imported when first used (PEP 562), so that ``hubtune gan --help`` and
:mod:`hubtune.gan.config` do not import the models, torch or the data libraries.
"""

from __future__ import annotations

from hubtune._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    **dict.fromkeys(("CheckpointError", "DatasetTooSmallError", "FeatureExtractorError", "GANDataError",
                     "GeneratorLoadError", "NonFiniteLossError"), "hubtune.errors"),
    **dict.fromkeys(("AdaptiveAugmentProbability", "DiffAugment"), "hubtune.gan.augment"),
    **dict.fromkeys(("ARCHITECTURES", "ArchConfig", "GANArchitecture", "GeneratorRegulariser", "register_architecture",
                     "unregister_architecture", "get_architecture"), "hubtune.gan.archs"),
    **dict.fromkeys(("GANTrainingConfig", "GANDataArguments", "GANModelArguments", "GANOptimArguments",
                     "GANAdaptiveMixArguments", "GANAugmentArguments", "GANScheduleArguments", "GANEvalArguments",
                     "GANHubArguments"), "hubtune.gan.config"),
    **dict.fromkeys(("ImageSet", "StepBatchSampler", "load_image_set"), "hubtune.gan.data"),
    **dict.fromkeys(("DiscriminatorStepOutput", "GANRun", "GANTrainingResult", "GeneratorEma", "GeneratorStepOutput",
                     "JSONLinesTracker", "discriminator_loss", "discriminator_step", "format_summary", "generator_loss",
                     "generator_step", "load_checkpoint", "prepare_run", "r1_penalty", "save_checkpoint", "train_gan"),
                    "hubtune.gan.loop"),
    **dict.fromkeys(("FEATURE_EXTRACTORS", "FeatureExtractorKind", "build_feature_extractor", "compute_fid_kid",
                     "evaluate_generator", "register_feature_extractor", "unregister_feature_extractor"),
                    "hubtune.gan.metrics"),
    **dict.fromkeys(("BackboneDiscriminator", "DCGANDiscriminator", "DCGANGenerator", "Discriminator",
                     "FeatureHeadDiscriminator", "Generator", "MinibatchStdDev", "ResNetDiscriminator",
                     "ResNetGenerator", "TimmFeatureDiscriminator", "as_discriminator", "build_gan",
                     "build_timm_discriminator"), "hubtune.gan.models"),
    **dict.fromkeys(("PathLengthPenalty", "PathLengthRegulariser", "StyleGAN2Discriminator", "StyleGAN2Generator",
                     "build_stylegan2", "group_preserving_permutation"), "hubtune.gan.stylegan2"),
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
