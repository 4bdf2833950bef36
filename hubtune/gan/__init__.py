"""GANs with AdaptiveMix: models, an Accelerate training loop, FID/KID, and generators on the Hub.

    from hubtune.gan import train_gan, Generator

    result = train_gan(data="digits", arch="dcgan", steps=500, output_dir="gan-digits")
    generator = Generator.from_pretrained(result.generator_dir)   # or a Hub repo id
    images = generator.generate(16, seed=0)
"""

from hubtune.gan.checkpoint import CheckpointError
from hubtune.gan.data import DatasetTooSmallError, GANDataError, ImageSet, StepBatchSampler, load_image_set
from hubtune.gan.loop import (
    GANTrainingConfig,
    GANTrainingResult,
    JSONLinesTracker,
    NonFiniteLossError,
    discriminator_loss,
    generator_loss,
    r1_penalty,
    train_gan,
)
from hubtune.gan.metrics import FeatureExtractorError, build_feature_extractor, compute_fid_kid, evaluate_generator
from hubtune.gan.models import (
    DCGANDiscriminator,
    DCGANGenerator,
    Discriminator,
    FeatureHeadDiscriminator,
    Generator,
    GeneratorLoadError,
    MinibatchStdDev,
    ResNetDiscriminator,
    ResNetGenerator,
    as_discriminator,
    build_gan,
)
from hubtune.gan.publish import push_generator_folder, render_generator_card, save_generator_folder
