"""Fault suite of ``hubtune compare`` (issue 28): the longest job, so the one where a crash at run 37 or a silently
wrong table costs the most. As in tests/test_faults.py: the real command line, its exit code, a one-line message
without a traceback, and the files already there byte-identical afterwards.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from hubtune.commands import main
from hubtune.training import compare as compare_module
from hubtune.training.compare import read_runs
from test_faults import hashes, run, sigterm_when

TINY = ["--model", "resnet10t", "--image_size", "16", "--max_steps", "2", "--per_device_train_batch_size", "8",
        "--disable_tqdm", "true"]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Two classes of 12 images: 19 training images (9 and 10 per class) and 5 held out, whatever the seed."""
    folder = tmp_path_factory.mktemp("images") / "images"
    for cls, colour in (("red", (250, 10, 10)), ("blue", (10, 10, 250))):
        (folder / cls).mkdir(parents=True)
        for k in range(12):
            Image.new("RGB", (20 + k, 20), tuple(min(255, c + 3 * k) for c in colour)).save(folder / cls / f"{k}.png")
    return folder


def _argv(images: Path, out: Path, *extra: str) -> list[str]:
    return ["compare", *TINY, "--dataset", str(images), "--methods", "ce", "core-tuning", "--seeds", "2",
            "--output_dir", str(out), *extra]


@pytest.fixture(scope="module")
def finished(images, tmp_path_factory):
    """A finished comparison: ce and core-tuning over seeds 0 and 1 (4 runs)."""
    out = tmp_path_factory.mktemp("finished") / "cmp"
    assert main(_argv(images, out)) == 0
    assert len(read_runs(out)) == 4
    return out


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if any run starts."""
    def refuse(*args, **kwargs):
        raise AssertionError("a run started before everything was checked")

    monkeypatch.setattr(compare_module, "_run_one", refuse)


def _copy(finished: Path, tmp_path: Path) -> Path:
    out = tmp_path / "cmp"
    shutil.copytree(finished, out)
    return out


def _edit_line(path: Path, number: int, **changes) -> None:
    lines = path.read_text().splitlines()
    row = json.loads(lines[number - 1])
    row.update(changes)
    lines[number - 1] = json.dumps(row)
    path.write_text("\n".join(lines) + "\n")


# ------------------------------------------------------------------------------------------ checked before any run


@pytest.mark.parametrize("extra, message", [
    (["--methods", "ce", "core-tuning:eta=abc"], "--methods core-tuning:eta=abc: eta must be a number, not 'abc'"),
    (["--methods", "ce", "l2-sp:alpha=nan"], "--methods l2-sp:alpha=nan: alpha must be a finite number, not 'nan'"),
    (["--methods", "ce", "l2-sp:alpha=.inf"], "alpha must be a finite number, not inf"),
    (["--methods", "ce", "l2-sp", "--alpha", "inf"], "--alpha must be a finite number, got inf"),
    (["--methods", "ce", "core-tuning:projector_dim=2.5"], "projector_dim must be an integer, not 2.5"),
    (["--methods", "ce", "core-tuning:temperature=-1"], "--methods core-tuning:temperature=-1: temperature must be > 0"),
    (["--train_samples_per_class", "0"], "--train_samples_per_class must be a positive integer"),
    (["--train_samples_per_class", "-3"], "--train_samples_per_class must be a positive integer"),
    (["--train_samples_per_class", "10"], "has 9 training image(s), fewer than train_samples_per_class=10"),
    (["--seed", "4294967295"], "--seed 4294967295 with --seeds 2 would train seeds up to 4294967296"),
    (["--seeds", "0"], "--seeds must be a positive integer"),
])
def test_every_value_is_checked_before_the_first_run(images, tmp_path, capsys, no_training, extra, message):
    """Issue 28: `--methods ce core-tuning:eta=abc` trained the ce runs, then died with a TypeError; `l2-sp:alpha=nan`
    the same in L2SPConfig.validate; `--train_samples_per_class 0` trained on the whole split."""
    out = tmp_path / "cmp"
    line = run([*_argv(images, out), *extra], capsys)
    assert line.startswith("hubtune compare: error: ") and message in line, line
    assert not out.exists()  # nothing written, the lock's folder removed again


def test_co_tuning_on_a_transformers_backbone_is_refused_before_any_run(tmp_path, capsys, no_training, images):
    import transformers

    vit = tmp_path / "vit"
    config = transformers.ViTConfig(image_size=16, patch_size=8, hidden_size=16, num_hidden_layers=1,
                                    num_attention_heads=2, intermediate_size=32, num_labels=4)
    transformers.ViTForImageClassification(config).save_pretrained(vit)
    before = hashes(vit)
    out = tmp_path / "cmp"
    line = run(["compare", "--model", str(vit), "--pretrained", "true", "--image_size", "16", "--max_steps", "2",
                "--dataset", str(images), "--methods", "ce", "co-tuning", "--output_dir", str(out)], capsys)
    message = "Co-Tuning needs a timm backbone with its ImageNet classifier; transformers backbones are not supported yet"
    assert message in line and "has none" not in line
    assert not out.exists() and hashes(vit) == before
    # hubtune finetune says the same, when the model is built
    line = run(["finetune", "--model", str(vit), "--pretrained", "true", "--image_size", "16", "--max_steps", "1",
                "--dataset", str(images), "--method", "co-tuning", "--output_dir", str(tmp_path / "ft")], capsys)
    assert message in line and hashes(vit) == before


# ------------------------------------------------------------------------------------------ the journal


@pytest.mark.parametrize("change, message", [
    ({"seed": "one"}, "compare.jsonl line 2: 'seed' must be a seed (an integer >= 0), not \"one\""),
    ({"accuracy": None}, "compare.jsonl line 2: 'accuracy' must be an accuracy (a number from 0 to 1), not null"),
    ({"seconds_per_step": 0}, "compare.jsonl line 2: 'seconds_per_step' must be a time (a number > 0), not 0"),
    ({"settings": "sgd"}, "compare.jsonl line 2: 'settings' must be a mapping of training settings"),
])
def test_an_ill_typed_line_names_the_file_and_the_line(finished, images, tmp_path, capsys, no_training, change, message):
    """Issue 28: `"seed": "one"` died with ValueError at compare.py:199, `"accuracy": null` with a TypeError in
    summarize (and no report)."""
    out = _copy(finished, tmp_path)
    _edit_line(out / "compare.jsonl", 2, **change)
    before = hashes(out)
    line = run(_argv(images, out), capsys)
    assert message in line and str(out / "compare.jsonl") in line and "--overwrite_output_dir" in line
    assert hashes(out) == before


def test_a_line_that_is_not_json_names_the_file_and_the_line(finished, images, tmp_path, capsys, no_training):
    out = _copy(finished, tmp_path)
    lines = (out / "compare.jsonl").read_text().splitlines()
    lines[0] = lines[0][: len(lines[0]) // 2]  # a half line in the middle is no kill's doing: refused
    (out / "compare.jsonl").write_text("\n".join(lines) + "\n")
    before = hashes(out)
    line = run(_argv(images, out), capsys)
    assert f"{out / 'compare.jsonl'} line 1 is not a JSON record" in line
    assert hashes(out) == before


def test_a_last_line_cut_short_is_dropped_said_and_its_run_trained_again(finished, images, tmp_path, capsys):
    """Issue 28: the re-run redid the cut run but appended its line to the half line, and the report counted the
    method over 1 seed instead of 2, with exit 0."""
    out = _copy(finished, tmp_path)
    journal = out / "compare.jsonl"
    data = journal.read_bytes()
    last = data[:-1].rsplit(b"\n", 1)[1]
    journal.write_bytes(data[: len(data) - 1 - len(last) // 2])  # a kill during the last write
    kept = [json.loads(x) for x in journal.read_text().splitlines()[:3]]
    printed = run(_argv(images, out), capsys, expected_code=0)
    assert f"Note: line 4 of {journal} was cut short (a run stopped while writing it) and is dropped" in printed
    assert "3 of 4 runs already finished" in printed and "[4/4] core-tuning, seed 1" in printed
    rows = [json.loads(x) for x in journal.read_text().splitlines()]  # every line whole
    assert rows[:3] == kept and (rows[3]["label"], rows[3]["seed"]) == ("core-tuning", 1) and len(rows) == 4
    report = json.loads((out / "compare.json").read_text())
    assert [m["seeds"] for m in report["methods"]] == [[0, 1], [0, 1]]
    assert "| core-tuning | 2 |" in (out / "compare.md").read_text()


def test_a_run_recorded_with_other_settings_is_not_reused(finished, images, tmp_path, capsys, no_training):
    """A method's recipe that changed between releases (here: the recorded learning rate) must not be silently
    reused: one line names the line, the run and the setting."""
    out = _copy(finished, tmp_path)
    journal = out / "compare.jsonl"
    row = json.loads(journal.read_text().splitlines()[1])
    row["settings"]["learning_rate"] = {"value": 0.01, "source": "recipe of core-tuning"}
    _edit_line(journal, 2, settings=row["settings"])
    before = hashes(out)
    line = run(_argv(images, out), capsys)
    assert "holds 1 run(s) of a comparison with other settings (line 2, core-tuning with seed 0: learning_rate=0.01 " \
           "(recipe of core-tuning) where this command would use 0.001 (default))" in line
    assert "choose another --output_dir, or pass --overwrite_output_dir" in line
    assert hashes(out) == before


def test_overwrite_sets_a_damaged_journal_aside_and_starts_over(finished, images, tmp_path, capsys):
    out = _copy(finished, tmp_path)
    _edit_line(out / "compare.jsonl", 3, seed=True)
    damaged = (out / "compare.jsonl").read_bytes()
    printed = run([*_argv(images, out), "--overwrite_output_dir", "true"], capsys, expected_code=0)
    assert "set aside in" in printed and "0 of 4 runs already finished" in printed
    (aside,) = out.glob("compare.jsonl.replaced-*")
    assert aside.read_bytes() == damaged and len(read_runs(out)) == 4


def test_the_report_never_counts_fewer_runs_than_it_trained(images, tmp_path, capsys, monkeypatch):
    """A run whose line did not reach the journal (here: dropped) is not silently left out of the table."""
    from hubtune.training.compare_journal import RunJournal

    real_append = RunJournal.append

    def lose_the_second(self, row):
        if row["seed"] != 1:
            real_append(self, row)

    monkeypatch.setattr(RunJournal, "append", lose_the_second)
    out = tmp_path / "cmp"
    line = run([*_argv(images, out), "--methods", "ce"], capsys)
    assert f"{out / 'compare.jsonl'} lacks 1 of the 2 runs it should hold now (e.g. ce with seed 1)" in line
    assert "Rerun the same command" in line and not (out / "compare.md").exists()


# ------------------------------------------------------------------------------------------ the folder's lock


def test_a_second_compare_into_a_running_ones_folder_is_refused(images, tmp_path, capsys, monkeypatch):
    """Issue 28: two identical compares started together in one folder both exited 0, every run trained twice and
    compare.jsonl got 8 lines for 4 runs. The second is now refused, naming the first."""
    import os
    import socket
    import subprocess
    import sys

    from hubtune.locking import LOCK_NAME

    out = tmp_path / "cmp"
    argv = [*_argv(images, out), "--seeds", "1"]
    real, second = compare_module._run_one, {}

    def start_another_while_training(label, *args, **kwargs):
        work_dir = args[-1]
        assert (out / LOCK_NAME).is_file() and work_dir.parent == out  # the runs' folders: children of the one lock
        if not second:
            second["before"] = hashes(out)
            root = Path(__file__).resolve().parent.parent
            env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
            done = subprocess.run([sys.executable, "-m", "hubtune", *argv], capture_output=True, text=True,
                                  timeout=300, env=env)
            second.update(code=done.returncode, err=done.stderr, after=hashes(out))
        row = real(label, *args, **kwargs)
        assert not (work_dir / LOCK_NAME).exists()  # no second lock inside
        return row

    monkeypatch.setattr(compare_module, "_run_one", start_another_while_training)
    assert main(argv) == 0
    lines = [line for line in second["err"].strip().splitlines() if line.startswith("hubtune ")]
    assert second["code"] == 1 and len(lines) == 1 and "Traceback" not in second["err"], second["err"][-2000:]
    assert f"is in use by hubtune compare (pid {os.getpid()} on {socket.gethostname()}, started " in lines[0]
    assert second["after"] == second["before"]
    assert len(read_runs(out)) == 2 and not (out / LOCK_NAME).exists()


# ------------------------------------------------------------------------------------------ Ctrl-C and SIGTERM


@pytest.mark.parametrize("where", ["loading the data", "in a run"])
@pytest.mark.parametrize("kind, code, said", [("KeyboardInterrupt", 130, "interrupted"),
                                              ("Terminated", 143, "terminated (SIGTERM)")])
def test_an_interrupted_compare_gives_its_own_advice(finished, images, tmp_path, capsys, monkeypatch, where, kind, code,
                                                     said):
    """Issue 28: Ctrl-C and SIGTERM during compare printed "completed checkpoints are kept; resume with
    --resume_from_checkpoint": compare writes no checkpoints, and its own advice never reached the user."""
    from hubtune import errors
    from hubtune.locking import LOCK_NAME

    out = _copy(finished, tmp_path)

    def interrupt(*args, **kwargs):
        raise getattr(errors, kind, KeyboardInterrupt)()

    monkeypatch.setattr(compare_module, "_run_one" if where == "in a run" else "load_image_classification_data",
                        interrupt)
    before = hashes(out)
    line = run([*_argv(images, out), "--seeds", "3"], capsys, expected_code=code)
    lost = "the run of ce with seed 2 was lost; " if where == "in a run" else ""
    assert line == (f"hubtune compare: {said}; {lost}4 of 6 runs are saved in {out / 'compare.jsonl'}; rerun the same "
                    "command to continue (finished runs are not trained again)")
    assert hashes(out) == before and not (out / LOCK_NAME).exists() and not (out / ".run-in-progress").exists()


def test_sigterm_during_a_compare_says_what_is_saved_and_how_to_continue(images, tmp_path):
    """The real signal, as a cluster scheduler sends it, once the first run is in compare.jsonl."""
    out = tmp_path / "cmp"
    argv = ["compare", *TINY, "--max_steps", "150", "--dataset", str(images), "--methods", "ce", "--seeds", "2",
            "--output_dir", str(out)]
    journal = out / "compare.jsonl"
    code, err = sigterm_when(argv, lambda: journal.is_file() and journal.read_text().endswith("\n"), tmp_path,
                             "its first finished run")
    lines = [line for line in err.strip().splitlines() if line.startswith("hubtune ")]
    assert code == 143 and len(lines) == 1 and "Traceback" not in err, err[-3000:]
    assert lines[0] == err.strip().splitlines()[-1]
    assert lines[0] == (f"hubtune compare: terminated (SIGTERM); the run of ce with seed 1 was lost; 1 of 2 runs are "
                        f"saved in {journal}; rerun the same command to continue (finished runs are not trained again)")
    assert [(r["label"], r["seed"]) for r in read_runs(out)] == [("ce", 0)]
