"""What a finished `hubtune finetune` leaves and prints: one train_loss everywhere (also after a resume), an eval
block and the next step, and weights and checkpoints readable with the usual permissions."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import stat

import pytest

from hubtune.commands import main

ARGV = ["finetune", "--model", "test_resnet", "--method", "ce", "--max_steps", "7", "--max_train_samples", "64",
        "--max_eval_samples", "32", "--batch-size", "16", "--logging_steps", "3", "--save_strategy", "steps",
        "--save_steps", "4", "--save_total_limit", "2", "--eval_strategy", "no", "--disable_tqdm", "true"]


def _run(argv):
    stdout, stderr = io.StringIO(), io.StringIO()
    old = os.umask(0o022)
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = main(argv)
    finally:
        os.umask(old)
    assert code == 0, stderr.getvalue()[-3000:]
    return stdout.getvalue()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("finetune") / "out"
    return out, _run([*ARGV, "--output_dir", str(out)])


def _final_train_entry(out):
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    return [entry for entry in history if "train_runtime" in entry][-1]


def _assert_one_train_loss(out, printed):
    value = json.loads((out / "all_results.json").read_text())["train_loss"]
    assert json.loads((out / "train_results.json").read_text())["train_loss"] == value
    assert _final_train_entry(out)["train_loss"] == value
    # the Trainer's end-of-training line ({'train_runtime': ..., 'train_loss': '2.262', ...}) and the metrics block
    line = [row for row in printed.splitlines() if "'train_runtime'" in row][-1]
    assert f"'train_loss': '{value:.4g}'" in line
    block = re.search(r"\*\*\*\*\* train metrics \*\*\*\*\*\n(?:  .*\n)*?  train_loss\s+=\s+(\S+)", printed)
    assert block and float(block.group(1)) == pytest.approx(value, abs=1e-3)
    return value


def test_train_loss_is_one_value_in_all_results_trainer_state_and_the_printed_lines(run):
    out, printed = run
    _assert_one_train_loss(out, printed)


def test_after_a_resume_train_loss_is_the_whole_runs_in_every_place(run, tmp_path):
    out, _ = run
    resumed = tmp_path / "out"
    resumed.mkdir()
    shutil.copytree(out / "checkpoint-4", resumed / "checkpoint-4")
    printed = _run([*ARGV, "--output_dir", str(resumed), "--resume_from_checkpoint", str(resumed / "checkpoint-4")])
    value = _assert_one_train_loss(resumed, printed)
    # steps 1-7 again (same seed, same data order): the first run's whole-run mean, up to the unlogged step 4
    first = json.loads((out / "all_results.json").read_text())["train_loss"]
    assert value == pytest.approx(first, rel=0.05)


def test_the_end_prints_the_eval_block_and_how_to_try_push_and_load(run):
    out, printed = run
    assert "***** eval metrics *****" in printed
    assert re.search(r"  eval_accuracy\s+=", printed)
    rows = printed.splitlines()
    starts = [i for i, row in enumerate(rows) if row.startswith("Next:")]
    assert len(starts) == 1
    line = " ".join(rows[starts[0]:])  # the last lines printed: try, publish (with a Space), load
    assert f"hubtune demo {out.resolve()}" in line
    assert f"hubtune push {out.resolve()} ORG/NAME --space NAME" in line and "--hub_space NAME" in line
    assert 'timm.create_model("hf-hub:ORG/NAME", pretrained=True)' in line
    assert "AutoModelForImageClassification" in line and f"local-dir:{out.resolve()}" in line


def test_the_run_stores_held_out_examples_for_its_demo(run):
    out, _ = run
    index = json.loads((out / "examples" / "examples.json").read_text())
    files = [entry["file"] for entry in index["examples"]]
    assert 4 <= len(files) <= 8 and all((out / name).is_file() for name in files)
    assert "grayscale" in index["expects"] and "light on a dark background" in index["expects"]


def test_weights_and_checkpoints_get_the_usual_permissions(run):
    out, _ = run
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.name == "model.safetensors" and p.parent.name.startswith("checkpoint-") for p in files)
    modes = {str(p.relative_to(out)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    assert set(modes.values()) == {oct(0o644)}, modes
