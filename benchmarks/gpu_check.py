"""Validate a GPU in one call: the GPU tests, the benchmarks and a Trainer run; ONE JSON line of results.

    bash benchmarks/gpu_check.sh            # CUDA, bf16: appends to benchmarks/results/cuda.jsonl (< 8 min, one GPU)
    bash benchmarks/gpu_check.sh --smoke    # CPU, tiny sizes, 4 steps: to $HUBTUNE_GPU_CHECK_OUTPUT or a temp file

Installs nothing. What runs (full / --smoke):

1. ``pytest -q -m gpu tests/test_gpu.py`` (on CPU every test there is skipped);
2. Core-tuning vs CE step time and peak memory (benchmarks/bench_core_tuning.py): resnet50, vit_base_patch16_224 and
   convnext_tiny at 224 px, batch 128, bf16 / test_resnet, test_vit, test_convnext at 32 px, batch 8;
3. the AdaptiveMix discriminator step (benchmarks/bench_adaptivemix_gan.py): ResNet GAN at 64 and 128 px, batch 64 /
   DCGAN at 16 px, batch 8;
4. ``hubtune finetune`` through the Trainer on a generated image folder, CE then Core-tuning, reporting images per
   second: resnet50, 224 px, batch 128, 200 steps, bf16 / test_resnet, 32 px, batch 8, 4 steps.

Each phase is timed; a failing phase is recorded (``"error"``) and the others still run; the exit code is 1 when any
phase failed. The JSON line holds the device, the TF32 / cudnn.benchmark settings (set by
:func:`hubtune.devices.configure_backends`, as hubtune's training path does), the versions and the git
commit.

Time on one H200 (estimate, nothing measured yet): tests 1-3 min (one inductor compile), benchmarks ~1.5 min
(3 models x 2 methods x 13 steps, 2 x 4 GAN variants x 13 steps), Trainer runs ~2 x 40 s (200 steps of resnet50 at
~3,000 images/s are ~9 s; start-up, data loading and the final evaluation the rest): about 5-6 minutes in all.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import bench_adaptivemix_gan
import bench_core_tuning
from hubtune.commands import main as hubtune_main
from hubtune.devices import configure_backends

ROOT = Path(__file__).resolve().parent.parent

FULL = {
    "device": "cuda", "bf16": True,
    "core_tuning": [("resnet50", 224, 128), ("vit_base_patch16_224", 224, 128), ("convnext_tiny", 224, 128)],
    "bench_repeats": ["--repeats", "10", "--warmup", "3"],
    "gan": [["--arch", "resnet", "--image-size", "64", "--batch-size", "64"],
            ["--arch", "resnet", "--image-size", "128", "--batch-size", "64"]],
    "finetune": {"model": "resnet50", "image_size": 224, "batch": 128, "steps": 200, "images": 2048, "stored_px": 256},
    "tests_timeout": 360,
}
SMOKE = {
    "device": "cpu", "bf16": False,
    "core_tuning": [("test_resnet", 32, 8), ("test_vit", 32, 8), ("test_convnext", 32, 8)],
    "bench_repeats": ["--repeats", "2", "--warmup", "1"],
    "gan": [["--arch", "dcgan", "--image-size", "16", "--batch-size", "8", "--d-channels", "8", "--g-channels", "8"]],
    "finetune": {"model": "test_resnet", "image_size": 32, "batch": 8, "steps": 4, "images": 40, "stored_px": 40},
    "tests_timeout": 120,
}


def _phase(results: dict, name: str, fn):
    start = time.perf_counter()
    try:
        results[name] = fn()
    except Exception as e:  # noqa: BLE001 - one failing phase must not lose the others' results
        traceback.print_exc()
        results[name] = {"error": f"{type(e).__name__}: {e}"[:2000]}
        results.setdefault("failed_phases", []).append(name)
    results.setdefault("phase_seconds", {})[name] = round(time.perf_counter() - start, 1)
    print(f"[gpu_check] {name}: {results['phase_seconds'][name]} s", flush=True)


def run_tests(plan: dict) -> dict:
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "tests/test_gpu.py", "-p", "no:cacheprovider", "-rs"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=plan["tests_timeout"])
    print(done.stdout[-4000:], done.stderr[-2000:], sep="\n")
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    counts = {kind: int(n) for n, kind in re.findall(r"(\d+) (passed|failed|skipped|errors?)", summary)}
    if done.returncode not in (0, 5):
        raise RuntimeError(f"GPU tests failed (rc {done.returncode}): {summary}")
    return {"returncode": done.returncode, "summary": summary, **counts}


def run_core_tuning_benchmarks(plan: dict) -> list[dict]:
    out = []
    for model, size, batch in plan["core_tuning"]:
        argv = ["--model", model, "--image-size", str(size), "--batch-size", str(batch), "--device", plan["device"],
                *plan["bench_repeats"]]
        out.append(bench_core_tuning.main(argv + (["--bf16"] if plan["bf16"] else [])))
        if plan["device"] == "cuda":
            torch.cuda.empty_cache()
    return out


def run_gan_benchmarks(plan: dict) -> list[dict]:
    return [bench_adaptivemix_gan.main([*argv, "--device", plan["device"], *plan["bench_repeats"]]
                                       + (["--bf16"] if plan["bf16"] else [])) for argv in plan["gan"]]


def make_image_folder(folder: Path, num_images: int, size: int, num_classes: int = 10) -> Path:
    """Smooth random JPEG images (cheap to store and decode, like photos), one sub-folder per class."""
    rng = np.random.default_rng(0)
    for i in range(num_images):
        label = i % num_classes
        coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((size, size), Image.BILINEAR)
        (folder / f"class_{label}").mkdir(parents=True, exist_ok=True)
        image.save(folder / f"class_{label}" / f"{i:05d}.jpg", quality=90)
    return folder


def run_finetune(plan: dict, work: Path) -> dict:
    spec = plan["finetune"]
    data = make_image_folder(work / "images", spec["images"], spec["stored_px"])
    out = {"model": spec["model"], "image_size": spec["image_size"], "batch_size": spec["batch"],
           "max_steps": spec["steps"], "num_images": spec["images"]}
    for method in ("ce", "core-tuning"):
        folder = work / f"finetune-{method}"
        argv = ["finetune", "--model", spec["model"], "--dataset", str(data), "--method", method,
                "--image_size", str(spec["image_size"]), "--per_device_train_batch_size", str(spec["batch"]),
                "--max_steps", str(spec["steps"]), "--eval_strategy", "no", "--save_strategy", "no",
                "--logging_steps", "50", "--max_eval_samples", "64", "--output_dir", str(folder),
                "--overwrite_output_dir"]
        if plan["bf16"]:
            argv.append("--bf16")
        if plan["device"] == "cuda":  # workers (the default -1 = min(8, CPUs) with CUDA) kept across epochs
            argv += ["--dataloader_persistent_workers", "true"]
        else:
            argv += ["--use_cpu"]
        code = hubtune_main(argv)
        if code != 0:
            raise RuntimeError(f"hubtune finetune --method {method} exited with {code}")
        metrics = json.loads((folder / "all_results.json").read_text())
        out[method] = {"images_per_second": metrics.get("train_samples_per_second"),
                       "train_runtime_s": metrics.get("train_runtime"), "train_loss": metrics.get("train_loss")}
    ce, ct = out["ce"]["images_per_second"], out["core-tuning"]["images_per_second"]
    if ce and ct:
        out["core_tuning_vs_ce_throughput"] = round(ct / ce, 3)
    return out


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny models, 4 steps (what the test suite runs)")
    parser.add_argument("--output", default=None, help="JSON-lines file to append the result line to")
    args = parser.parse_args(argv)
    plan = SMOKE if args.smoke else FULL
    if plan["device"] == "cuda" and not torch.cuda.is_available():
        print("gpu_check: CUDA is not available; run with --smoke for the CPU check.", file=sys.stderr)
        return 2
    output = args.output or (os.environ.get("HUBTUNE_GPU_CHECK_OUTPUT") if args.smoke else None)
    if output is None:
        output = (tempfile.mkstemp(prefix="hubtune-gpu-check-", suffix=".jsonl")[1] if args.smoke
                  else str(ROOT / "benchmarks" / "results" / "cuda.jsonl"))

    started = time.perf_counter()
    results: dict = {
        "benchmark": "gpu_check", "smoke": args.smoke,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": _git_commit(), "device": plan["device"], "bf16": plan["bf16"],
        "backends": configure_backends(), "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
    }
    with tempfile.TemporaryDirectory(prefix="hubtune-gpu-check-") as tmp:
        _phase(results, "tests", lambda: run_tests(plan))
        _phase(results, "core_tuning_vs_ce", lambda: run_core_tuning_benchmarks(plan))
        _phase(results, "adaptivemix_discriminator_step", lambda: run_gan_benchmarks(plan))
        _phase(results, "finetune", lambda: run_finetune(plan, Path(tmp)))
    results["backends_after"] = configure_backends()
    results["elapsed_s"] = round(time.perf_counter() - started, 1)
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    with open(output, "a", encoding="utf-8") as f:
        f.write(json.dumps(results, default=str) + "\n")
    print(f"[gpu_check] {results['elapsed_s']} s; failed phases: {results.get('failed_phases', 'none')}; "
          f"results appended to {output}")
    return 1 if results.get("failed_phases") else 0


if __name__ == "__main__":
    sys.exit(main())
