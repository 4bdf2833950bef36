"""`hubtune finetune`: the default run end to end, and clear errors for bad input."""

import json
import os
import subprocess
import sys

import pytest
import timm
import torch

from hubtune.commands import main


def test_default_run_trains_evaluates_and_writes_a_hub_ready_folder(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-m", "hubtune", "finetune"], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "starts from random weights" in proc.stdout
    assert "eval_accuracy=" in proc.stdout
    out = tmp_path / "hubtune-output"
    results = json.loads((out / "all_results.json").read_text())
    assert results["eval_accuracy"] >= 0.9  # digits, 5 epochs of Core-tuning from random weights
    assert results["eval_samples"] == 360
    for name in ("config.json", "model.safetensors", "README.md", "training_curve.png", "hubtune_run.json"):
        assert (out / name).is_file(), name
    assert not list(out.glob("*.bin"))
    card = (out / "README.md").read_text()
    assert "library_name: timm" in card and "core-tuning" in card
    # the folder is timm's Hub layout: plain timm loads it, with the label names
    model = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    assert model.num_classes == 10
    config = json.loads((out / "config.json").read_text())
    assert config["label_names"] == [str(i) for i in range(10)]
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--eta", "-1"], "eta (the contrastive weight) must be >= 0"),
        (["--model", "resnet_18"], "Unknown backbone 'resnet_18'"),
        (["--dataset", "/nonexistent/folder"], "/nonexistent/folder"),
        (["--push-to-hub", "not-a-repo-id"], "org/name"),
        (["--batch-size", "0"], "per_device_train_batch_size must be at least 1"),
        (["--epochs", "0"], "num_train_epochs must be > 0"),
        (["--sigma", "0.1"], "--sigma does not apply to --method core-tuning"),
        (["--method", "ce", "--eta", "0.5"], "--eta does not apply to --method ce"),
        (["--method", "adaptivemix", "--eta_warmup_ratio", "0.1"], "--eta_warmup_ratio does not apply"),
        (["--method", "simclr"], "Unknown method 'simclr'"),
        (["--image_size", "1"], "image_size=1 is too small"),
        (["--method", "adaptivemix", "--sigma", "-1"], "sigma"),
    ],
)
def test_bad_input_gets_a_clear_error_and_exit_code_1(argv, message, tmp_path, capsys):
    code = main(["finetune", "--output-dir", str(tmp_path / "out"), *argv])
    assert code == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()  # nothing was started


def test_help_lists_the_subcommands(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for command in ("finetune", "push", "ood", "gan"):
        assert command in text


def test_a_config_file_with_flags_overriding_it_reaches_training_arguments(tmp_path, capsys):
    """HF's example-script convention: any TrainingArguments option, from a YAML file or a flag."""
    config = tmp_path / "run.yaml"
    config.write_text(
        "model: test_resnet\nmethod: ce\nmax_steps: 2\nper_device_train_batch_size: 16\nmax_train_samples: 64\n"
        "max_eval_samples: 32\nlr_scheduler_type: linear\nwarmup_steps: 1\nlogging_steps: 1\n"
        "dataloader_num_workers: 0\ndisable_tqdm: true\nlearning_rate: 0.5\n"
        f"output_dir: {tmp_path / 'out'}\n"
    )
    assert main(["finetune", str(config), "--lr", "0.002", "--optim", "sgd"]) == 0, capsys.readouterr().err
    args = json.loads((tmp_path / "out" / "training_args.json").read_text())
    assert args["learning_rate"] == 0.002 and args["lr_scheduler_type"] == "linear" and args["warmup_steps"] == 1
    assert args["optim"] == "sgd" and args["optim_args"] == "momentum=0.9,nesterov=True"
    assert json.loads((tmp_path / "out" / "hubtune_run.json").read_text())["method"] == "ce"

    config.write_text("learning_rat: 0.1\n")
    assert main(["finetune", str(config)]) == 1
    assert "unknown option(s) learning_rat" in capsys.readouterr().err


def test_an_output_folder_of_another_run_is_not_overwritten(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"earlier run")
    argv = ["finetune", "--model", "test_resnet", "--method", "ce", "--max_steps", "1", "--max_train_samples", "32",
            "--max_eval_samples", "16", "--batch-size", "16", "--output_dir", str(out), "--disable_tqdm", "true"]
    assert main(argv) == 1
    assert "already holds another run" in capsys.readouterr().err
    assert (out / "model.safetensors").read_bytes() == b"earlier run"
    assert main([*argv, "--overwrite_output_dir"]) == 0
    assert (out / "model.safetensors").read_bytes() != b"earlier run"
