"""Files written by the previous release still load and resume, with the same numbers as that release gave.

tests/data/previous_release/ holds tiny output folders (a finetune run and two GAN runs, each with its
``checkpoint-2``) written by hubtune at commit 8a97ae5, before the run layer of issue 25, and what resuming them to
step 4 gave on that release (``resumed_reference.json``; its README says how all of it was made).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file

from hubtune.commands import main

DATA = Path(__file__).with_name("data") / "previous_release"
REFERENCE = json.loads((DATA / "resumed_reference.json").read_text())
GAN_COMMON = ["--dataset", "digits", "--per_device_train_batch_size", "4", "--eval_num_samples", "0",
              "--num_sample_images", "4", "--checkpoint_every", "2", "--log_every", "1", "--no_progress_bar"]
GAN_RUNS = {
    "gan-dcgan": ["--image_size", "16", "--g_channels", "4", "--d_channels", "4", "--latent_dim", "4", "--r1_gamma", "1",
                  "--diffaugment", "color", "--augment_target", "0.6"],
    "gan-stylegan2": ["--arch", "stylegan2", "--image_size", "32", "--channel_base", "64", "--channel_max", "4",
                      "--w_dim", "4", "--latent_dim", "4", "--mapping_layers", "1", "--pl_weight", "1",
                      "--pl_interval", "2", "--r1_every", "2"],
}
FINETUNE = ["finetune", "--model", "local-dir:tiny-backbone", "--method", "core-tuning", "--save_strategy", "steps",
            "--save_steps", "2", "--max_train_samples", "32", "--max_eval_samples", "16", "--batch-size", "16",
            "--image_size", "16", "--disable_tqdm", "true", "--output_dir", "finetune-run"]

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")  # tests/conftest.py


@pytest.fixture
def previous_release(tmp_path, monkeypatch):
    """A copy of the folders, as the working directory (they name each other by relative paths)."""
    copy = tmp_path / "previous_release"
    shutil.copytree(DATA, copy)
    monkeypatch.chdir(copy)
    return copy


def _weights(path: Path) -> dict[str, float]:
    tensors = [t.double() for t in load_file(str(path)).values() if t.is_floating_point()]
    return {"weights_sum": float(sum(t.sum() for t in tensors)),
            "weights_abs_sum": float(sum(t.abs().sum() for t in tensors))}


def _close(got: float, want: float) -> bool:
    # CPU models differ in their float kernels (see tests/gan/test_same_seed.py's RTOL): agree to 1e-3 relative
    return math.isclose(got, want, rel_tol=1e-3, abs_tol=1e-9)


@pytest.mark.parametrize("name", list(GAN_RUNS))
def test_a_gan_run_of_the_previous_release_loads_and_resumes_as_it_did(previous_release, name, capsys):
    from hubtune.gan import Generator

    before = Generator.from_pretrained(previous_release / name)
    assert before.generate(2, seed=0).shape[0] == 2
    assert main(["gan", *GAN_COMMON, *GAN_RUNS[name], "--output_dir", name, "--max_steps", "4",
                 "--resume_from_checkpoint"]) == 0, capsys.readouterr().err
    logged = [json.loads(line) for line in (previous_release / name / "logs.jsonl").read_text().splitlines() if line]
    want = REFERENCE[name]["losses"]
    assert [r["step"] for r in logged] == [r["step"] for r in want] == [1, 2, 3, 4]
    for got_record, want_record in zip(logged, want):
        assert set(got_record) == set(want_record)
        assert all(_close(got_record[k], want_record[k]) for k in want_record), (got_record, want_record)
    weights = _weights(previous_release / name / "model.safetensors")
    assert all(_close(weights[k], REFERENCE[name][k]) for k in weights)
    assert Generator.from_pretrained(previous_release / name).generate(2, seed=0).shape == \
        before.generate(2, seed=0).shape


def test_a_gan_training_config_of_the_previous_release_loads(previous_release):
    from hubtune.gan.config import GANTrainingConfig

    for name in GAN_RUNS:
        saved = json.loads((previous_release / name / "training_config.json").read_text())
        config = GANTrainingConfig.from_dict(saved)
        assert {k: v for k, v in config.to_dict().items() if k in saved} == saved


def test_a_finetune_run_of_the_previous_release_loads_and_resumes_as_it_did(previous_release, capsys):
    from hubtune.modeling import HubtuneForImageClassification

    checkpoint = HubtuneForImageClassification.from_pretrained(previous_release / "finetune-run" / "checkpoint-2")
    assert checkpoint.config.method == "core-tuning"
    assert main([*FINETUNE, "--max_steps", "4", "--resume_from_checkpoint", "true"]) == 0, capsys.readouterr().err
    results = json.loads((previous_release / "finetune-run" / "all_results.json").read_text())
    want = REFERENCE["finetune-run"]
    assert _close(results["eval_loss"], want["eval_loss"]) and _close(results["train_loss"], want["train_loss"])
    weights = _weights(previous_release / "finetune-run" / "model.safetensors")
    assert all(_close(weights[k], want[k]) for k in weights)
    assert (previous_release / "finetune-run" / "checkpoint-4" / "SHA256SUMS").is_file()
