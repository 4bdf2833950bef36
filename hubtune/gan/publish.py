"""A Hub-ready generator folder: config.json, model.safetensors, README.md (model card), samples.png.

The card is rendered from ``model_cards/generator.md`` (``hubtune.hub.load_template``) with huggingface_hub's
``ModelCard.from_template``; pushing goes through ``hubtune.hub.push_folder``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from hubtune.gan.models import PAPER_URL, Generator
from hubtune.hub import load_template, push_folder, validate_repo_id

SAMPLE_IMAGE = "samples.png"
SAMPLE_COUNT = 64

__all__ = ["render_generator_card", "save_generator_folder", "push_generator_folder"]

ARCH_TITLES = {"dcgan": "DCGAN", "resnet": "ResNet (SNGAN-style)"}


def render_generator_card(
    generator: Generator,
    *,
    repo_id: str | None = None,
    training: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    data_source: str = "unknown data",
    num_images: int | None = None,
    num_processes: int = 1,
    sample_image: str = SAMPLE_IMAGE,
    sample_seed: int = 0,
) -> ModelCard:
    """The generator's model card (metadata + sample grid + FID with its extractor + set-up + citation)."""
    from hubtune.gan.loop import GANTrainingConfig

    training = training or GANTrainingConfig().to_dict()
    adaptivemix = GANTrainingConfig.from_dict(training).adaptive_mix_settings()
    info = type(generator)._hub_mixin_info.model_card_data
    card_data = ModelCardData(
        library_name=info.library_name, license=info.license, pipeline_tag=info.pipeline_tag,
        tags=sorted(set((info.tags or []) + [generator.arch])),
    )
    model_name = repo_id.split("/")[-1] if repo_id else f"hubtune-{generator.arch}-{generator.image_size}px"
    return ModelCard.from_template(
        card_data,
        template_str=load_template("generator.md"),
        model_name=model_name,
        repo_id=repo_id or "<your-namespace>/<this-repo>",
        arch=generator.arch,
        arch_title=ARCH_TITLES.get(generator.arch, generator.arch),
        image_size=generator.image_size,
        channels=generator.channels,
        latent_dim=generator.latent_dim,
        data_source=data_source,
        num_images=num_images,
        num_processes=num_processes,
        adaptivemix=adaptivemix,
        metrics=metrics,
        training=training,
        sample_image=sample_image,
        sample_count=SAMPLE_COUNT,
        sample_seed=sample_seed,
        paper_url=PAPER_URL,
    )


def save_generator_folder(
    generator: Generator,
    folder: str | os.PathLike,
    *,
    repo_id: str | None = None,
    training: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    data_source: str = "unknown data",
    num_images: int | None = None,
    num_processes: int = 1,
    seed: int = 0,
) -> Path:
    """Write ``config.json``, ``model.safetensors``, ``samples.png``, ``metrics.json`` and ``README.md``."""
    from torchvision.utils import save_image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    generator.save_pretrained(folder)  # config.json (with arch) + model.safetensors
    save_image(generator.generate(SAMPLE_COUNT, seed=seed), str(folder / SAMPLE_IMAGE), nrow=8, padding=2)
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2))
    card = render_generator_card(generator, repo_id=repo_id, training=training, metrics=metrics,
                                 data_source=data_source, num_images=num_images, num_processes=num_processes,
                                 sample_seed=seed)
    card.save(folder / "README.md")
    return folder


def push_generator_folder(folder: str | os.PathLike, repo_id: str, *, token: str | None = None,
                          private: bool = False, revision: str | None = None) -> str:
    """Upload a folder written by :func:`save_generator_folder` (its card then names ``repo_id``); returns the URL."""
    validate_repo_id(repo_id)
    folder = Path(folder)
    readme = folder / "README.md"
    if readme.exists():
        text = readme.read_text(encoding="utf-8").replace("<your-namespace>/<this-repo>", repo_id)
        readme.write_text(text, encoding="utf-8")
    return push_folder(folder, repo_id, token=token, private=bool(private), revision=revision)
