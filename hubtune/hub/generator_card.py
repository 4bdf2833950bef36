"""The GAN generator's model card, rendered from ``model_cards/generator.md`` with plain values only.

:func:`render_generator_card` receives a :class:`GeneratorCardValues` of strings, numbers and dicts (never a model
class nor a run config): the generator's ``generate_model_card`` hook (``hubtune.gan.models.Generator``) gathers them and calls it, so both
``save_pretrained`` and ``push_to_hub`` write this card as README.md.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from hubtune.hub.templates import load_template

__all__ = ["GeneratorCardValues", "PLACEHOLDER_REPO_ID", "SAMPLE_COUNT", "SAMPLE_IMAGE", "TRUNCATION_IMAGE",
           "render_generator_card"]

SAMPLE_IMAGE = "samples.png"
TRUNCATION_IMAGE = "truncation.png"
SAMPLE_COUNT = 64
PLACEHOLDER_REPO_ID = "<your-namespace>/<this-repo>"


@dataclass
class GeneratorCardValues:
    """What the generator card shows, as plain values (strings, numbers, dicts; never a model or a run config).

    The generator fills what it is (``arch``, sizes, its architecture's extras through ``card_values()``), the
    training loop hands over how it was trained (``training_info``: ``training``, ``adaptivemix``, ...).

    Attributes:
        arch / arch_title / image_size / channels / latent_dim: what the generator is (``arch_title``: the
            registered architecture's title; None shows ``arch``).
        repo_id: the Hub repo the card is for (its loading snippet names it); None writes a placeholder.
        training: the run's settings by name (the GAN config's ``to_dict()``).
        adaptivemix: AdaptiveMix's settings (shrinkage_weight, alpha, sigma, distance, per_sample, preset,
            mix_fakes), None when off.
        augmentation: the DiffAugment policy, whether its probability was adaptive (target) and its final p.
        discriminator: a backbone discriminator's description (name, stages, frozen), None for the arch's own.
        metrics: FID/KID as written to metrics.json (with ``feature_extractor``), None when not computed.
        data_source / num_images / num_processes: where the training images came from, how many, on how many processes.
        sample_image / sample_count / sample_seed: the sample grid written next to the card.
        arch_preset / arch_details: the architecture preset and its resolved widths (stylegan2).
        truncation_image / truncation_psis / truncation_columns: the truncation sweep image (one row per psi).
        library_name / license / pipeline_tag / tags / paper_url: the card's metadata.
    """

    arch: str
    image_size: int
    channels: int
    latent_dim: int
    arch_title: str | None = None
    repo_id: str | None = None
    training: dict[str, Any] | None = None
    adaptivemix: dict[str, Any] | None = None
    augmentation: dict[str, Any] | None = None
    discriminator: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    data_source: str = "unknown data"
    num_images: int | None = None
    num_processes: int = 1
    sample_image: str = SAMPLE_IMAGE
    sample_count: int = SAMPLE_COUNT
    sample_seed: int = 0
    arch_preset: str | None = None
    arch_details: dict[str, Any] | None = None
    truncation_image: str | None = None
    truncation_psis: list[float] | None = None
    truncation_columns: int = 8
    library_name: str = "hubtune"
    license: str | None = "apache-2.0"
    pipeline_tag: str = "unconditional-image-generation"
    tags: list[str] | None = None
    paper_url: str | None = None

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in fields(cls)}


def render_generator_card(values: GeneratorCardValues | None = None, /, **overrides: Any) -> ModelCard:
    """The generator's model card: metadata, sample grid, loading snippet, FID/KID with its extractor, set-up.

    ``values`` (or, without it, the :class:`GeneratorCardValues` fields by keyword); keyword ``overrides`` replace
    fields of ``values``.
    """
    v = GeneratorCardValues(**overrides) if values is None else replace(values, **overrides)
    card_data = ModelCardData(
        library_name=v.library_name, license=v.license, pipeline_tag=v.pipeline_tag,
        tags=sorted(set((v.tags or []) + [v.arch])),
    )
    model_name = v.repo_id.split("/")[-1] if v.repo_id else f"hubtune-{v.arch}-{v.image_size}px"
    page = {f.name: getattr(v, f.name) for f in fields(v)
            if f.name not in ("library_name", "license", "pipeline_tag", "tags")}
    page.update(repo_id=v.repo_id or PLACEHOLDER_REPO_ID, arch_title=v.arch_title or v.arch, training=v.training or {},
                arch_details=v.arch_details or {}, truncation_psis=v.truncation_psis or [])
    return ModelCard.from_template(card_data, template_str=load_template("generator.md"), model_name=model_name,
                                   **page)
