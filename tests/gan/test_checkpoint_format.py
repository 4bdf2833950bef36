"""Why GAN checkpoints are hubtune's own (hubtune/gan/checkpoint.py) and not ``accelerator.save_state``: no file of a
checkpoint is a pickle (safetensors + JSON only, each readable without unpickling), and the SHA256SUMS manifest
lists every file. Exact resume is tests/gan/test_gan_loop.py::test_resume_continues_exactly."""

import json
from pathlib import Path

import pytest
from safetensors import safe_open

from hubtune.gan import GANTrainingConfig, train_gan

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")  # tests/conftest.py


def test_a_checkpoint_holds_no_pickle_and_a_manifest_of_every_file(tmp_path):
    config = GANTrainingConfig.from_options(
        dataset="digits", image_size=16, g_channels=8, d_channels=8, latent_dim=16, per_device_train_batch_size=8,
        max_steps=2, checkpoint_every=2, r1_gamma=1.0, diffaugment="color", augment_target=0.6, eval_num_samples=0,
        export_generator=False, progress_bar=False, output_dir=str(tmp_path / "run"))
    folder = Path(train_gan(config).last_checkpoint)
    files = sorted(p for p in folder.iterdir())
    names = {p.name for p in files}
    assert {"generator.safetensors", "discriminator.safetensors", "ema.safetensors", "optimizer_g.safetensors",
            "optimizer_d.json", "rng_state_0.safetensors", "rng_state_0.json", "trainer_state.json",
            "SHA256SUMS"} <= names
    for path in files:
        head = path.read_bytes()[:2]
        assert head[:1] != b"\x80" and head != b"PK", f"{path.name} looks like a pickle / torch.save zip"
        if path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt") as f:
                assert list(f.keys()) is not None
        elif path.suffix == ".json":
            json.loads(path.read_text())
        else:
            assert path.name == "SHA256SUMS"
    listed = {line.split()[-1].lstrip("*") for line in (folder / "SHA256SUMS").read_text().splitlines() if line}
    assert listed == names - {"SHA256SUMS"}
