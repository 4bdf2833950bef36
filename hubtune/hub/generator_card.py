"""The GAN generator's model card, rendered from ``model_cards/generator.md`` with plain values only.

:func:`render_generator_card` receives strings, numbers and dicts (never a model class): the generator's
``generate_model_card`` hook (``hubtune.gan.models.Generator``) gathers them and calls it, so both
``save_pretrained`` and ``push_to_hub`` write this card as README.md.
"""

from __future__ import annotations

from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from hubtune.hub.templates import load_template

__all__ = ["ARCH_TITLES", "PLACEHOLDER_REPO_ID", "SAMPLE_COUNT", "SAMPLE_IMAGE", "TRUNCATION_IMAGE",
           "render_generator_card"]

SAMPLE_IMAGE = "samples.png"
TRUNCATION_IMAGE = "truncation.png"
SAMPLE_COUNT = 64
PLACEHOLDER_REPO_ID = "<your-namespace>/<this-repo>"
ARCH_TITLES = {"dcgan": "DCGAN", "resnet": "ResNet (SNGAN-style)", "stylegan2": "StyleGAN2"}


def render_generator_card(
    *,
    arch: str,
    image_size: int,
    channels: int,
    latent_dim: int,
    repo_id: str | None = None,
    training: dict[str, Any] | None = None,
    adaptivemix: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    data_source: str = "unknown data",
    num_images: int | None = None,
    num_processes: int = 1,
    sample_image: str = SAMPLE_IMAGE,
    sample_count: int = SAMPLE_COUNT,
    sample_seed: int = 0,
    library_name: str = "hubtune",
    license: str | None = "apache-2.0",  # noqa: A002 - the card's metadata key
    pipeline_tag: str = "unconditional-image-generation",
    tags: list[str] | None = None,
    paper_url: str | None = None,
    arch_preset: str | None = None,
    arch_details: dict[str, Any] | None = None,
    truncation_image: str | None = None,
    truncation_psis: list[float] | None = None,
    truncation_columns: int = 8,
    augmentation: dict[str, Any] | None = None,
    discriminator: dict[str, Any] | None = None,
) -> ModelCard:
    """The generator's model card: metadata, sample grid, loading snippet, FID/KID with its extractor, set-up.

    Args:
        arch / image_size / channels / latent_dim: what the generator is.
        repo_id: the Hub repo the card is for (its loading snippet names it); None writes a placeholder.
        training: the run's training configuration as a dict (the GAN config's field names).
        adaptivemix: AdaptiveMix's settings (weight, alpha, sigma, distance, per_sample, preset, mix_fakes), None when off.
        metrics: FID/KID as written to metrics.json (with ``feature_extractor``), None when not computed.
        data_source / num_images / num_processes: where the training images came from, how many, on how many processes.
        sample_image / sample_count / sample_seed: the sample grid written next to the card.
        arch_preset / arch_details: the architecture preset (stylegan2) and its resolved widths.
        truncation_image / truncation_psis / truncation_columns: the truncation sweep image (one row per psi).
        augmentation: the DiffAugment policy, whether its probability was adaptive (ADA target) and its final p.
        discriminator: a timm backbone discriminator's description (name, stages, frozen), None for the arch's own.
    """
    card_data = ModelCardData(
        library_name=library_name, license=license, pipeline_tag=pipeline_tag,
        tags=sorted(set((tags or []) + [arch])),
    )
    model_name = repo_id.split("/")[-1] if repo_id else f"hubtune-{arch}-{image_size}px"
    return ModelCard.from_template(
        card_data,
        template_str=load_template("generator.md"),
        model_name=model_name,
        repo_id=repo_id or PLACEHOLDER_REPO_ID,
        arch=arch,
        arch_title=ARCH_TITLES.get(arch, arch),
        image_size=image_size,
        channels=channels,
        latent_dim=latent_dim,
        data_source=data_source,
        num_images=num_images,
        num_processes=num_processes,
        adaptivemix=adaptivemix,
        metrics=metrics,
        training=training or {},
        sample_image=sample_image,
        sample_count=sample_count,
        sample_seed=sample_seed,
        paper_url=paper_url,
        arch_preset=arch_preset,
        arch_details=arch_details or {},
        truncation_image=truncation_image,
        truncation_psis=truncation_psis or [],
        truncation_columns=truncation_columns,
        augmentation=augmentation,
        discriminator=discriminator,
    )
