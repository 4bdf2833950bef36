"""Weights and checkpoints get the permissions open() gives (0o666 less the umask), not safetensors' /
mkstemp's 0600: GAN checkpoints and generators, converted backbones (classifier layouts and finetune
checkpoints: tests/layouts/test_export.py and tests/commands/test_finetune_output.py)."""

from __future__ import annotations

import os
import stat

import pytest
import timm
import torch
from safetensors.torch import save_file

from hubtune.convert import save_timm_folder
from hubtune.gan import checkpoint as ckpt
from hubtune.gan.models import DCGANGenerator
from hubtune.permissions import current_umask, default_file_mode
from hubtune.runs.checkpoints import publish_checkpoint


@pytest.fixture(params=[0o022, 0o027])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _modes(folder):
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.rglob("*") if p.is_file()}


def test_the_umask_is_read_without_changing_it(umask):
    assert current_umask() == umask and default_file_mode() == 0o666 & ~umask
    assert os.umask(umask) == umask


def test_a_gan_checkpoint_folder(umask, tmp_path):
    partial = tmp_path / ".checkpoint-1.partial"
    partial.mkdir()
    ckpt.save_module(torch.nn.Linear(2, 2), partial / "generator.safetensors")
    publish_checkpoint(partial, tmp_path / "checkpoint-1")  # the run layer's, for both halves' checkpoints
    assert set(_modes(tmp_path / "checkpoint-1").values()) == {0o666 & ~umask}


def test_a_generator(umask, tmp_path):
    DCGANGenerator(latent_dim=8, image_size=32, channels=1, base_channels=8).save_pretrained(tmp_path)
    assert _modes(tmp_path)["model.safetensors"] == 0o666 & ~umask


def test_a_converted_backbone(umask, tmp_path):
    save_timm_folder(timm.create_model("test_resnet", num_classes=0), tmp_path)
    assert set(_modes(tmp_path).values()) == {0o666 & ~umask}


def test_safetensors_alone_would_write_0600(umask, tmp_path):
    """Why hubtune sets the mode itself (if safetensors stops doing this, the fix is harmless)."""
    save_file({"w": torch.ones(1)}, str(tmp_path / "w.safetensors"))
    assert _modes(tmp_path)["w.safetensors"] in (0o600, 0o666 & ~umask)
