"""The run layer (hubtune.runs): one place per duty for both training halves, and the checkpoint pickle policy.

The halves' own behaviour through these functions is tested where they are used (tests/test_faults.py through the
command line, tests/training/test_trainer.py, tests/gan/test_gan_loop.py); here: what the layer itself promises.
"""

from __future__ import annotations

import ast
import json
import shutil
import signal
from pathlib import Path

import pytest
import torch

from hubtune.errors import CheckpointError, OutputDirError, Terminated
from hubtune.manifest import MANIFEST_NAME
from hubtune.runs import folder, interrupt
from hubtune.runs.checkpoints import (
    LATEST,
    last_good,
    publish_checkpoint,
    refuse_past_the_end,
    resolve_resume,
    resume_request,
    staging_folder,
)

HUBTUNE = Path(__file__).resolve().parents[2] / "hubtune"
PREVIOUS_RELEASE = Path(__file__).resolve().parents[1] / "data" / "previous_release"


def _checkpoint(output_dir: Path, step: int, state: dict | None = None, files: dict | None = None) -> Path:
    """A checkpoint written through the run layer (staged, SHA256SUMS, renamed)."""
    final = output_dir / f"checkpoint-{step}"
    staging = staging_folder(final)
    for name, content in (files or {"weights.bin": b"w" * 64}).items():
        (staging / name).write_bytes(content)
    (staging / "trainer_state.json").write_text(json.dumps(state or {"global_step": step}))
    return publish_checkpoint(staging, final)


def test_get_last_checkpoint_would_resume_from_a_half_written_folder_and_hubtune_does_not(tmp_path, capsys):
    """Why hubtune does not resume from transformers' get_last_checkpoint: it picks the highest-numbered folder even
    when a kill -9 left it without its trainer_state.json, or when a file in it changed after it was written."""
    from transformers.trainer_utils import get_last_checkpoint

    _checkpoint(tmp_path, 2)
    changed = _checkpoint(tmp_path, 4)
    (changed / "weights.bin").write_bytes(b"x" * 64)  # same size, other bytes
    (tmp_path / "checkpoint-6").mkdir()  # a save killed before its trainer_state.json
    assert Path(get_last_checkpoint(str(tmp_path))).name == "checkpoint-6"
    assert resolve_resume(tmp_path, True) == tmp_path / "checkpoint-2"
    printed = capsys.readouterr().out
    assert f"Skipping {tmp_path / 'checkpoint-6'}: it has no trainer_state.json" in printed
    assert f"Skipping {tmp_path / 'checkpoint-4'}: weights.bin changed after it was written" in printed


def test_resume_requests_are_read_alike_for_both_halves():
    assert [resume_request(v) for v in (None, False, "", "false", "None", "no")] == [None] * 6
    assert [resume_request(v) for v in (True, "true", "latest", "last", "TRUE", "yes")] == [LATEST] * 6
    assert resume_request("out/checkpoint-4") == "out/checkpoint-4"


def test_a_named_checkpoint_is_checked_before_anything_inside_it_is_read(tmp_path):
    good = _checkpoint(tmp_path, 2)
    bad = _checkpoint(tmp_path, 4)
    seen = []
    assert resolve_resume(tmp_path, str(good), check_files=seen.append) == good and seen == [good]
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve_resume(tmp_path, str(tmp_path / "checkpoint-9"))
    (bad / "trainer_state.json").unlink()
    with pytest.raises(CheckpointError, match=r"checkpoint-4 is incomplete.*last complete checkpoint is .*checkpoint-2"):
        resolve_resume(tmp_path, str(bad))
    (good / "weights.bin").write_bytes(b"v" * 64)
    with pytest.raises(CheckpointError, match="weights.bin changed after it was written.*no other checkpoint passes"):
        resolve_resume(tmp_path, str(good))
    with pytest.raises(CheckpointError, match="no complete checkpoint in"):
        resolve_resume(tmp_path / "empty", True)
    with pytest.raises(CheckpointError, match="passes its content check"):
        resolve_resume(tmp_path, True)
    assert resolve_resume(tmp_path, None) is None and resolve_resume(tmp_path, "false") is None


def test_past_the_end_reads_either_halfs_state(tmp_path):
    classifier = _checkpoint(tmp_path, 4, {"global_step": 4, "epoch": 2.0})
    gan = _checkpoint(tmp_path / "gan", 6, {"step": 6})
    refuse_past_the_end(classifier, 4)
    refuse_past_the_end(gan, 7)
    with pytest.raises(CheckpointError, match="is at step 4, past --max_steps 3: pass --max_steps 4 or more"):
        refuse_past_the_end(classifier, 3)
    with pytest.raises(CheckpointError, match="is at step 6, past --max_steps 5: pass --max_steps 6 or more"):
        refuse_past_the_end(gan, 5)
    with pytest.raises(CheckpointError, match=r"epoch 2\), past --num_train_epochs 1: pass --num_train_epochs 2"):
        refuse_past_the_end(classifier, -1, num_train_epochs=1.0)
    refuse_past_the_end(classifier, -1, num_train_epochs=2.0)


def test_a_checkpoint_replaces_one_of_its_name_only_once_complete_and_old_ones_are_pruned(tmp_path):
    for step in (1, 2, 3):
        _checkpoint(tmp_path, step)
    again = staging_folder(tmp_path / "checkpoint-3")
    (again / "new.bin").write_bytes(b"n")
    (again / "trainer_state.json").write_text("{}")
    assert (tmp_path / "checkpoint-3" / "weights.bin").is_file(), "the old folder stays until the new one is written"
    publish_checkpoint(again, tmp_path / "checkpoint-3", keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2", "checkpoint-3"]
    listed = (tmp_path / "checkpoint-3" / MANIFEST_NAME).read_text()
    assert "new.bin" in listed and "weights.bin" not in listed and last_good(tmp_path) == tmp_path / "checkpoint-3"


def test_the_output_folder_guard_refuses_another_runs_results_unless_resumed_or_overwritten(tmp_path):
    out = tmp_path / "out"
    _checkpoint(out, 2)
    with pytest.raises(OutputDirError, match="already holds another run's model or checkpoints"):
        with folder.guarded_output_dir(out, "gan", resume=None, overwrite=False, run_files=()):
            pass
    assert not (out / ".hubtune.lock").exists(), "the lock goes with the refusal"
    for resume, overwrite in ((LATEST, False), (None, True)):
        with folder.guarded_output_dir(out, "gan", resume=resume, overwrite=overwrite, run_files=()) as held:
            assert held == out and (out / ".hubtune.lock").is_file()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "model.safetensors").write_bytes(b"")
    with pytest.raises(OutputDirError):
        folder.refuse_to_overwrite(tmp_path / "other", resume=None, overwrite=False, run_files=("model.safetensors",))


def test_an_interrupt_names_the_last_complete_checkpoint_and_the_shells_exit_code(tmp_path):
    last = _checkpoint(tmp_path, 2)
    (tmp_path / "checkpoint-4").mkdir()  # incomplete: never named
    for kind, code in ((KeyboardInterrupt, 130), (Terminated, 143)):
        with pytest.raises(kind) as caught:
            with interrupt.resumable_on_interrupt(tmp_path):
                raise kind()
        line, exit_code = interrupt.exit_line("gan", caught.value)
        assert exit_code == code == 128 + (signal.SIGTERM if kind is Terminated else signal.SIGINT)
        assert line.endswith(f"the last complete checkpoint is {last}; resume with --resume_from_checkpoint {last}")
    with pytest.raises(KeyboardInterrupt, match="no checkpoint had been written yet"):
        with interrupt.resumable_on_interrupt(tmp_path / "none"):
            raise KeyboardInterrupt()


def test_each_duty_has_one_place_both_halves_call():
    """The six duties of the run layer, each called from both training halves and defined nowhere else."""
    duties = {"guarded_output_dir": "hubtune/runs/folder.py", "resolve_resume": "hubtune/runs/checkpoints.py",
              "refuse_past_the_end": "hubtune/runs/checkpoints.py", "resumable_on_interrupt": "hubtune/runs/interrupt.py",
              "publish_checkpoint": "hubtune/runs/checkpoints.py", "publish": "hubtune/runs/publish.py"}
    halves = {"classifier": ("hubtune/training/trainer.py", "hubtune/training/finetune.py"),
              "gan": ("hubtune/gan/loop.py",)}
    defined, called = {}, {half: set() for half in halves}
    for path in HUBTUNE.rglob("*.py"):
        rel = str(path.relative_to(HUBTUNE.parent))
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name in duties and node.col_offset == 0:
                defined.setdefault(node.name, []).append(rel)
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hubtune.runs"):
                for half, files in halves.items():
                    if rel in files:
                        called[half] |= {alias.name for alias in node.names}
    assert defined == {name: [place] for name, place in duties.items()}
    for half in halves:
        assert set(duties) <= called[half], (half, set(duties) - called[half])


def test_checkpoint_pickles_are_only_the_trainers_and_it_loads_them_with_weights_only(tmp_path, monkeypatch, capsys):
    """The README's checkpoint policy: safetensors + JSON everywhere, except the Trainer's optimizer / scheduler /
    RNG (/ scaler) state in a finetune checkpoint, which transformers writes with torch.save and loads only with
    torch.load(weights_only=True); hubtune writes no training_args.bin and a GAN checkpoint holds no pickle."""
    from hubtune.commands import main

    run = tmp_path / "previous_release"
    shutil.copytree(PREVIOUS_RELEASE, run)
    monkeypatch.chdir(run)
    loads, original = [], torch.load

    def spy(f, *args, **kwargs):
        loads.append((Path(str(f)).name, kwargs.get("weights_only")))
        return original(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    argv = ["finetune", "--model", "local-dir:tiny-backbone", "--method", "core-tuning", "--save_strategy", "steps",
            "--save_steps", "2", "--max_train_samples", "32", "--max_eval_samples", "16", "--batch-size", "16",
            "--image_size", "16", "--disable_tqdm", "true", "--output_dir", "finetune-run", "--max_steps", "4",
            "--resume_from_checkpoint", "true"]
    assert main(argv) == 0, capsys.readouterr().err
    assert {name for name, _ in loads} == {"optimizer.pt", "scheduler.pt", "rng_state.pth"}
    assert all(weights_only is True for _, weights_only in loads), loads
    pickled = {p.name for p in (run / "finetune-run" / "checkpoint-4").iterdir() if p.suffix in (".pt", ".pth", ".bin")}
    assert pickled == {"optimizer.pt", "scheduler.pt", "rng_state.pth"}
    gan = run / "gan-dcgan" / "checkpoint-2"
    assert {p.suffix for p in gan.iterdir()} <= {".safetensors", ".json", ""}  # "" : SHA256SUMS
