"""The examples run as users run them: the Trainer script alone and the Accelerate loop on 2 CPU processes."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(argv, cwd, timeout=600, extra_env=None):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", **(extra_env or {})}
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc.stdout


def test_trainer_example_core_tunes_and_saves_a_timm_folder(tmp_path):
    out = _run([sys.executable, str(ROOT / "examples" / "core_tuning_trainer.py"), "--max-steps", "4",
                "--max-train-samples", "128", "--batch-size", "32", "--output-dir", str(tmp_path / "out")], tmp_path)
    assert "eval_accuracy=" in out
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["architecture"] == "resnet18" and "num_classes" not in config.get("model_args", {})
    assert (tmp_path / "out" / "README.md").is_file()


@pytest.mark.parametrize("method", ["core-tuning", "adaptivemix"])
def test_accelerate_example_runs_on_two_processes(tmp_path, method):
    # accelerate 1.15's `accelerate launch --cpu --num_processes 2` starts a single process; torchrun starts two
    env = {"ACCELERATE_USE_CPU": "1"}
    out = _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                "--master_port", str(_free_port()), str(ROOT / "examples" / "core_tuning_accelerate.py"),
                "--steps", "3", "--batch-size", "16", "--max-train-samples", "128", "--method", method,
                "--output-dir", str(tmp_path / "out")], tmp_path, extra_env=env)
    assert out.count("eval_accuracy=") == 1 and "(2 processes)" in out  # two ranks, printed by the main one
    assert (tmp_path / "out" / "model.safetensors").is_file()


def test_accelerate_example_runs_co_tuning_on_two_processes(tmp_path, timm_weights_with_head):
    # each rank computes p(y_s|y_t) on its half of the data, summed over both (all_reduce) before the first step
    out = _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                "--master_port", str(_free_port()), str(ROOT / "examples" / "core_tuning_accelerate.py"),
                "--steps", "2", "--batch-size", "16", "--max-train-samples", "64", "--method", "co-tuning",
                "--model", timm_weights_with_head, "--pretrained", "--output-dir", str(tmp_path / "out")], tmp_path,
               extra_env={"ACCELERATE_USE_CPU": "1"})
    assert out.count("eval_accuracy=") == 1 and "(2 processes)" in out
    assert (tmp_path / "out" / "model.safetensors").is_file()
