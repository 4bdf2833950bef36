"""`hubtune finetune`: the default run end to end, and clear errors for bad input."""

import json
import os
import subprocess
import sys

import pytest
import timm
import torch

from hubtune.cli import main


def test_default_run_trains_evaluates_and_writes_a_hub_ready_folder(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-m", "hubtune.cli", "finetune"], cwd=tmp_path, env=env, capture_output=True, text=True,
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
        (["--eta", "-1"], "eta must be >= 0"),
        (["--model", "resnet_18"], "Unknown backbone 'resnet_18'"),
        (["--dataset", "/nonexistent/folder"], "/nonexistent/folder"),
        (["--push-to-hub", "not-a-repo-id"], "org/name"),
        (["--batch-size", "0"], "batch_size must be at least 1"),
        (["--sigma", "0.1"], "--sigma does not apply to --method core-tuning"),
        (["--method", "adaptivemix", "--sigma", "-1"], "sigma"),
    ],
)
def test_bad_input_gets_a_clear_error_and_exit_code_1(argv, message, tmp_path, capsys):
    code = main(["finetune", "--output-dir", str(tmp_path / "out"), *argv])
    assert code == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing was started


def test_help_lists_the_subcommands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for command in ("finetune", "push", "ood", "gan"):
        assert command in text
