"""GANs with AdaptiveMix: models, an Accelerate training loop, FID/KID, and generators on the Hub.

    from hubtune.gan import GANTrainingConfig, Generator, train_gan

    result = train_gan(GANTrainingConfig(dataset="digits", arch="dcgan", max_steps=500, output_dir="gan-digits"))
    generator = Generator.from_pretrained("gan-digits")   # the output root holds the final (EMA) generator
    images = generator.generate(16, seed=0)
    generator.push_to_hub("ORG/NAME")                     # config.json, model.safetensors, README.md card, samples.png

Architectures ``dcgan``, ``resnet`` and ``stylegan2`` (:mod:`hubtune.gan.stylegan2`, imported here so that
``Generator.from_pretrained`` finds every architecture); DiffAugment / ADA in :mod:`hubtune.gan.augment`; a timm
backbone as the discriminator with :func:`build_timm_discriminator`.
"""

from hubtune.errors import (
    CheckpointError,
    DatasetTooSmallError,
    FeatureExtractorError,
    GANDataError,
    GeneratorLoadError,
    NonFiniteLossError,
)
from hubtune.gan.augment import AdaptiveAugmentProbability, DiffAugment
from hubtune.gan.config import GANTrainingConfig
from hubtune.gan.data import ImageSet, StepBatchSampler, load_image_set
from hubtune.gan.loop import (
    DiscriminatorStepOutput,
    GANTrainingResult,
    GeneratorStepOutput,
    JSONLinesTracker,
    discriminator_loss,
    discriminator_step,
    format_summary,
    generator_loss,
    generator_step,
    load_checkpoint,
    r1_penalty,
    save_checkpoint,
    train_gan,
)
from hubtune.gan.metrics import build_feature_extractor, compute_fid_kid, evaluate_generator
from hubtune.gan.models import (
    BackboneDiscriminator,
    DCGANDiscriminator,
    DCGANGenerator,
    Discriminator,
    FeatureHeadDiscriminator,
    Generator,
    MinibatchStdDev,
    ResNetDiscriminator,
    ResNetGenerator,
    TimmFeatureDiscriminator,
    as_discriminator,
    build_gan,
    build_timm_discriminator,
)
from hubtune.gan.stylegan2 import (
    PathLengthPenalty,
    StyleGAN2Discriminator,
    StyleGAN2Generator,
    build_stylegan2,
    group_preserving_permutation,
)
