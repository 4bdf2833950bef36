"""benchmarks/gpu_check.sh --smoke on CPU, so that the one-call GPU validation script cannot rot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_smoke_writes_one_json_line(tmp_path):
    output = tmp_path / "check.jsonl"
    env = {**os.environ, "HUBTUNE_GPU_CHECK_OUTPUT": str(output), "OMP_NUM_THREADS": "1",
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    done = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--smoke"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    lines = output.read_text().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["smoke"] is True and result["device"] == "cpu" and "failed_phases" not in result
    backends = result["backends"]
    assert {"tf32_matmul", "tf32_cudnn", "cudnn_benchmark", "device_name"} <= set(backends)
    assert result["tests"]["returncode"] == 0 and result["tests"].get("failed", 0) == 0
    assert result["tests"]["skipped"] >= 10  # every GPU test is collected, and skipped without CUDA
    assert [r["model"] for r in result["core_tuning_vs_ce"]] == ["test_resnet", "test_vit", "test_convnext"]
    assert all(r["ratio"] > 0 and r["ce_step_ms"] > 0 for r in result["core_tuning_vs_ce"])
    assert all(r["ratio_2pass_vs_plain"] > 0 for r in result["adaptivemix_discriminator_step"])
    finetune = result["finetune"]
    assert finetune["max_steps"] == 4
    assert finetune["ce"]["images_per_second"] > 0 and finetune["core-tuning"]["images_per_second"] > 0
    assert set(result["phase_seconds"]) == {"tests", "core_tuning_vs_ce", "adaptivemix_discriminator_step", "finetune"}
