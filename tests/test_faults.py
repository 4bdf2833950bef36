"""Fault suite: bad input and faults through the real command line, as a user would cause them.

Every case asserts the exit code, a one-line message without a traceback, and that the files that existed before
are byte-identical afterwards (nothing already saved is overwritten or corrupted).
"""

from __future__ import annotations

import errno
import hashlib
import json
from pathlib import Path

import pytest
from PIL import Image

import hubtune.layouts.files
from hubtune.commands import main

TINY = ["--model", "test_resnet", "--max_train_samples", "64", "--max_eval_samples", "32", "--batch-size", "16",
        "--disable_tqdm", "true", "--image_size", "32"]


def hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def run(argv, capsys, expected_code=1):
    code = main(argv)
    captured = capsys.readouterr()
    assert code == expected_code, captured.err[-2000:]
    if expected_code:
        # progress bars (datasets' "Generating train split") may come first; the error is one last line
        lines = [line for line in captured.err.strip().splitlines() if line.startswith("hubtune ")]
        assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
        assert captured.err.strip().splitlines()[-1] == lines[0]
        return lines[0]
    return captured.out


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A completed tiny fine-tuning run: model, card and two checkpoints."""
    out = tmp_path_factory.mktemp("finished") / "out"
    argv = ["finetune", *TINY, "--method", "ce", "--max_steps", "4", "--save_strategy", "steps", "--save_steps", "2",
            "--save_total_limit", "3", "--output_dir", str(out)]
    assert main(argv) == 0
    return out


@pytest.fixture
def image_folder(tmp_path):
    folder = tmp_path / "images"
    for cls, colour in (("red", (250, 10, 10)), ("blue", (10, 10, 250))):
        (folder / cls).mkdir(parents=True)
        for k in range(12):
            Image.new("RGB", (20 + k, 20), tuple(min(255, c + 3 * k) for c in colour)).save(folder / cls / f"{k}.png")
    return folder


# ------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--num_train_epochs", "0"], "num_train_epochs must be > 0"),
        (["--image_size", "1"], "image_size=1 is too small"),
        (["--method", "ce", "--eta", "0.5"], "--eta does not apply to --method ce"),
        (["--method", "adaptivemix", "--eta_warmup_ratio", "0.1"], "--eta_warmup_ratio does not apply"),
        (["--push_to_hub", "true"], "--push_to_hub needs --hub_model_id"),
        (["--push-to-hub", "not-a-repo-id"], "org/name"),
    ],
)
def test_bad_arguments_are_refused_before_anything_runs(argv, message, tmp_path, capsys):
    line = run(["finetune", *TINY, "--output_dir", str(tmp_path / "out"), *argv], capsys)
    assert message in line
    assert not (tmp_path / "out").exists()


def test_an_output_path_that_is_a_file(tmp_path, capsys):
    target = tmp_path / "results.txt"
    target.write_text("keep me")
    line = run(["finetune", *TINY, "--output_dir", str(target)], capsys)
    assert "is a file, not a folder" in line and target.read_text() == "keep me"


@pytest.mark.parametrize("command, argv, option", [
    ("finetune", ["--learning_rate", "-1"], "--learning_rate"),
    ("finetune", ["--learning_rate", "nan"], "--learning_rate"),
    ("finetune", ["--weight_decay", "-0.1"], "--weight_decay"),
    ("finetune", ["--adam_epsilon=-1e-8"], "--adam_epsilon"),
    ("finetune", ["--adam_beta1", "1.5"], "--adam_beta1"),
    ("finetune", ["--num_train_epochs", "-2", "--max_steps", "3"], "--num_train_epochs"),
    ("finetune", ["--max_steps", "-3"], "--max_steps"),
    ("finetune", ["--per_device_eval_batch_size", "0"], "--per_device_eval_batch_size"),
    ("finetune", ["--gradient_accumulation_steps", "0"], "--gradient_accumulation_steps"),
    ("finetune", ["--warmup_steps", "-1"], "--warmup_steps"),
    ("finetune", ["--max_grad_norm", "-1"], "--max_grad_norm"),
    ("finetune", ["--seed", "-1"], "--seed"),
    ("gan", ["--lr_g", "-1"], "lr_g"),
    ("gan", ["--lr_d", "nan"], "lr_d"),
    ("gan", ["--adam_beta2", "1"], "adam_beta2"),
    ("gan", ["--max_steps", "-5"], "max_steps"),
    ("gan", ["--per_device_train_batch_size", "0"], "per_device_train_batch_size"),
    ("gan", ["--eval_batch_size", "0"], "eval_batch_size"),
    ("gan", ["--eval_num_samples", "-1"], "eval_num_samples"),
    ("gan", ["--max_images", "0"], "max_images"),
    ("gan", ["--seed", "-1"], "seed"),
])
def test_numeric_options_are_checked_up_front_naming_the_option(command, argv, option, tmp_path, capsys):
    line = run([command, "--output_dir", str(tmp_path / "out"), *argv], capsys)
    assert line.startswith(f"hubtune {command}: error: ") and option in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command, text, key, expected", [
    ("finetune", "model: null\n", "model", "must be a string"),
    ("finetune", "learning_rate: {a: 1}\n", "learning_rate", "must be a number"),
    ("finetune", "max_steps: [1]\n", "max_steps", "must be an integer"),
    ("finetune", "per_device_train_batch_size: true\n", "per_device_train_batch_size", "must be an integer"),
    ("finetune", "pretrained: 'yes'\n", "pretrained", "true or false"),
    ("finetune", "export_format: [timm]\n", "export_format", "must be a string"),
    ("finetune", "image_size: 32.5\n", "image_size", "must be an integer"),
    ("ood", "batch_size: true\n", "batch_size", "must be an integer"),
    ("gan", "diffaugment: [color, translation]\n", "diffaugment", "`diffaugment: color,translation`"),
    ("gan", "max_steps: 1.5\n", "max_steps", "must be an integer"),
    ("gan", "adaptivemix: 0\n", "adaptivemix", "true or false"),
])
def test_a_wrongly_typed_config_value_names_the_key_and_the_file(command, text, key, expected, tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(text)
    line = run([command, str(config), "--output_dir", str(tmp_path / "out")], capsys)
    assert key in line and expected in line and str(config) in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", ["binary", "folder", "latin-1"])
def test_a_config_file_that_is_not_text_is_named(kind, tmp_path, capsys):
    config = tmp_path / "run.yaml"
    if kind == "folder":
        config.mkdir()
    else:
        config.write_bytes(bytes(range(256)) * 4 if kind == "binary" else "learning_rate: 0.1 # caf\xe9".encode("latin-1"))
    line = run(["finetune", str(config), "--output_dir", str(tmp_path / "out")], capsys)
    assert str(config) in line and ("folder" if kind == "folder" else "not a text file") in line


def test_config_values_that_argparse_would_accept_still_work(tmp_path):
    """YAML reads 1e-3 as a string and a lone list item as a scalar; both mean what the flag would."""
    from hubtune.arguments import parse_command_line
    from hubtune.commands import finetune, gan

    config = tmp_path / "run.yaml"
    config.write_text("learning_rate: 1e-3\nnum_train_epochs: 2\nresume_from_checkpoint: false\nreport_to: none\n")
    *_, training = parse_command_line(finetune.build_parser(), [str(config)])
    assert training.learning_rate == 0.001 and training.num_train_epochs == 2.0
    config.write_text("log_with: tensorboard\ndiffaugment: color,translation\nresume_from_checkpoint: true\n")
    (gan_arguments,) = parse_command_line(gan.build_parser(), [str(config)])
    gan_config, _ = gan_arguments.to_config()
    assert gan_config.log_with == ["tensorboard"] and gan_config.resume_from_checkpoint == "latest"


def _no_data_loading(monkeypatch):
    """Fail the test if a command gets as far as loading data (an output-dir check must come first)."""
    import hubtune.gan.loop
    import hubtune.training.finetune

    def refuse(*args, **kwargs):
        raise AssertionError("the output folder was checked only after the run had started")

    monkeypatch.setattr(hubtune.training.finetune, "load_image_classification_data", refuse)
    monkeypatch.setattr(hubtune.gan.loop, "load_image_set", refuse)


def _command_writing_to(command: str, out: Path) -> list[str]:
    if command == "finetune":
        return ["finetune", *TINY, "--method", "ce", "--max_steps", "2", "--output_dir", str(out)]
    if command == "gan":
        return ["gan", "--max_steps", "2", "--per_device_train_batch_size", "8", "--image_size", "16",
                "--eval_num_samples", "0", "--no_progress_bar", "--output_dir", str(out)]
    return ["ood", "--model", str(out.parent / "no-such-model"), "--dataset", "digits", "--ood_dataset", "noise",
            "--output_dir", str(out)]


@pytest.mark.parametrize("command", ["finetune", "gan", "ood"])
@pytest.mark.parametrize("where", ["folder", "parent"])
def test_a_read_only_output_dir_is_refused_before_anything_runs(command, where, tmp_path, capsys, monkeypatch):
    import os

    read_only = tmp_path / "read-only"
    read_only.mkdir()
    (read_only / "keep.txt").write_text("keep me")
    out = read_only if where == "folder" else read_only / "new" / "out"
    before = hashes(read_only)
    read_only.chmod(0o555)
    if os.geteuid() == 0:  # root may write anyway, so only a read-only disk would stop it: answer as one would
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda path, mode, *args, **kwargs: False if (
            Path(path) == read_only and mode & os.W_OK) else real_access(path, mode, *args, **kwargs))
    _no_data_loading(monkeypatch)
    try:
        line = run(_command_writing_to(command, out), capsys)
    finally:
        read_only.chmod(0o755)
    assert f"--output_dir {str(out)!r} cannot be written" in line and "read-only" in line
    assert hashes(read_only) == before and not (read_only / "new").exists()


@pytest.mark.parametrize("command", ["finetune", "gan", "ood"])
@pytest.mark.parametrize("where", ["folder", "parent"])
def test_a_dangling_symlink_output_dir_is_named(command, where, tmp_path, capsys, monkeypatch):
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "gone")
    out = link if where == "folder" else link / "out"
    _no_data_loading(monkeypatch)
    line = run(_command_writing_to(command, out), capsys)
    assert f"{str(link)!r} is a dangling symbolic link" in line and "File exists" not in line
    assert link.is_symlink() and not (tmp_path / "gone").exists()


# ------------------------------------------------------------------------------------------ earlier results


def test_a_folder_holding_another_run_is_not_overwritten(finished_run, capsys):
    before = hashes(finished_run)
    line = run(["finetune", *TINY, "--method", "core-tuning", "--max_steps", "1", "--output_dir", str(finished_run)],
               capsys)
    assert "already holds another run" in line and "--overwrite_output_dir" in line
    assert hashes(finished_run) == before


def test_resuming_into_a_folder_of_another_model_names_both(finished_run, capsys):
    before = hashes(finished_run)
    line = run(["finetune", *TINY, "--model", "resnet10t", "--method", "ce", "--max_steps", "6",
                "--output_dir", str(finished_run), "--resume_from_checkpoint", "true"], capsys)
    assert "holds another model" in line and "test_resnet" in line and "resnet10t" in line
    assert hashes(finished_run) == before


def test_kill_during_a_checkpoint_save_then_resume(finished_run, tmp_path, capsys):
    """A kill -9 mid-save leaves checkpoint-N without its trainer_state.json (written last): resume skips it."""
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    partial = run_dir / "checkpoint-6"
    partial.mkdir()
    weights = (run_dir / "checkpoint-4" / "model.safetensors").read_bytes()
    (partial / "model.safetensors").write_bytes(weights[: len(weights) // 3])
    out = run(["finetune", *TINY, "--method", "ce", "--max_steps", "6", "--save_strategy", "steps", "--save_steps",
               "2", "--output_dir", str(run_dir), "--resume_from_checkpoint", "true"], capsys, expected_code=0)
    assert "Skipping" in out and "checkpoint-6" in out
    assert (run_dir / "checkpoint-6" / "trainer_state.json").is_file()  # re-saved completely by the resumed run
    results = json.loads((run_dir / "all_results.json").read_text())
    assert results["train_loss"] > 0.5  # the whole run's mean loss, not only the resumed steps'


@pytest.mark.parametrize("limit, message", [
    (["--max_steps", "3"], "is at step 4, past --max_steps 3: pass --max_steps 4 or more"),
    (["--num_train_epochs", "0.5"], "is at step 4 (epoch 1), past --num_train_epochs 0.5: pass --num_train_epochs 1 or more"),
])
def test_resuming_with_fewer_steps_than_the_checkpoint_is_refused(finished_run, capsys, limit, message):
    """Issue 17: resuming with --max_steps below the checkpoint's step was accepted without a word."""
    before = hashes(finished_run)
    line = run(["finetune", *TINY, "--method", "ce", *limit, "--output_dir", str(finished_run),
                "--resume_from_checkpoint", "true"], capsys)
    assert "checkpoint-4" in line and message in line
    assert hashes(finished_run) == before


def test_resuming_a_gan_with_fewer_steps_than_the_checkpoint_is_refused(tmp_path, capsys):
    from accelerate.state import AcceleratorState

    out = tmp_path / "gan"
    argv = ["gan", "--per_device_train_batch_size", "8", "--image_size", "16", "--eval_num_samples", "0",
            "--no_progress_bar", "--output_dir", str(out)]
    AcceleratorState._reset_state(True)
    assert main([*argv, "--max_steps", "2"]) == 0
    before = hashes(out)
    AcceleratorState._reset_state(True)
    line = run([*argv, "--max_steps", "1", "--resume_from_checkpoint", "true"], capsys)
    AcceleratorState._reset_state(True)
    assert "checkpoint-2 is at step 2, past --max_steps 1: pass --max_steps 2 or more" in line
    assert hashes(out) == before


def _overwrite_inside(path: Path, count: int = 21) -> None:
    """Overwrite ``count`` bytes in the middle of a file, keeping its size (silent corruption)."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + count] = bytes((b + 1) % 256 for b in data[middle:middle + count])
    path.write_bytes(bytes(data))


def test_a_checkpoint_changed_without_changing_its_size_is_refused_or_skipped(finished_run, tmp_path, capsys):
    """Issue 17: 21 bytes overwritten inside a checkpoint's weights resumed silently. SHA256SUMS, written last, is
    checked: a named checkpoint is refused naming the file and the last good one; `true` falls back to it."""
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    assert (run_dir / "checkpoint-4" / "SHA256SUMS").is_file()
    weights = run_dir / "checkpoint-4" / "model.safetensors"
    size = weights.stat().st_size
    _overwrite_inside(weights)
    assert weights.stat().st_size == size
    before = hashes(run_dir)
    argv = ["finetune", *TINY, "--method", "ce", "--max_steps", "6", "--save_strategy", "steps", "--save_steps", "2",
            "--output_dir", str(run_dir)]
    line = run([*argv, "--resume_from_checkpoint", str(run_dir / "checkpoint-4")], capsys)
    assert "checkpoint-4: model.safetensors changed after it was written" in line
    assert f"the last good checkpoint is {run_dir / 'checkpoint-2'}" in line and "steps trained since it are lost" in line
    assert hashes(run_dir) == before
    out = run([*argv, "--resume_from_checkpoint", "true"], capsys, expected_code=0)
    assert f"Skipping {run_dir / 'checkpoint-4'}: model.safetensors changed" in out
    assert f"resuming from {run_dir / 'checkpoint-2'}" in out
    assert json.loads((run_dir / "checkpoint-6" / "trainer_state.json").read_text())["global_step"] == 6


@pytest.mark.parametrize("resume", ["checkpoint-4", "true"])
def test_a_checkpoint_without_sha256sums_still_resumes_with_a_warning(finished_run, tmp_path, capsys, resume):
    """Issue 28: a checkpoint whose SHA256SUMS was deleted (and whose weights were changed without a change of size)
    resumed with no word; it still resumes (as checkpoints written before manifests existed must), saying once that
    its content could not be checked."""
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    for checkpoint in run_dir.glob("checkpoint-*"):
        (checkpoint / "SHA256SUMS").unlink()  # as an older hubtune wrote them
    before = {k: v for k, v in hashes(run_dir).items() if k.startswith("checkpoint-")}
    printed = run(["finetune", *TINY, "--method", "ce", "--max_steps", "6", "--save_strategy", "steps",
                   "--save_steps", "2", "--save_total_limit", "5", "--output_dir", str(run_dir),
                   "--resume_from_checkpoint", str(run_dir / resume) if resume != "true" else resume], capsys,
                  expected_code=0)
    warned = [line for line in printed.splitlines() if "could not be checked" in line]
    assert warned == [f"Note: {run_dir / 'checkpoint-4'} has no SHA256SUMS, so its content could not be checked (a "
                      "change that kept the files' sizes would go unnoticed); resuming from it as it is."]
    assert (run_dir / "checkpoint-6" / "SHA256SUMS").is_file()
    assert {k: v for k, v in hashes(run_dir).items() if k in before} == before


def test_a_gan_checkpoint_changed_without_changing_its_size_is_refused_or_skipped(tmp_path, capsys):
    from accelerate.state import AcceleratorState

    out = tmp_path / "gan"
    argv = ["gan", "--per_device_train_batch_size", "8", "--image_size", "16", "--eval_num_samples", "0",
            "--no_progress_bar", "--checkpoint_every", "2", "--log_every", "1", "--output_dir", str(out)]
    AcceleratorState._reset_state(True)
    assert main([*argv, "--max_steps", "4"]) == 0
    capsys.readouterr()
    for name in ("generator", "discriminator", "ema"):
        _overwrite_inside(out / "checkpoint-4" / f"{name}.safetensors")
    before = hashes(out)
    AcceleratorState._reset_state(True)
    line = run([*argv, "--max_steps", "6", "--resume_from_checkpoint", str(out / "checkpoint-4")], capsys)
    assert "checkpoint-4: discriminator.safetensors changed after it was written" in line
    assert f"the last good checkpoint is {out / 'checkpoint-2'}" in line and hashes(out) == before
    AcceleratorState._reset_state(True)
    printed = run([*argv, "--max_steps", "6", "--resume_from_checkpoint", "true"], capsys, expected_code=0)
    AcceleratorState._reset_state(True)
    assert f"Skipping {out / 'checkpoint-4'}: discriminator.safetensors changed" in printed
    assert f"resuming from {out / 'checkpoint-2'}" in printed
    steps = [json.loads(line)["step"] for line in (out / "logs.jsonl").read_text().splitlines() if "loss_d" in line]
    assert steps[-4:] == [3, 4, 5, 6], "steps 3 and 4 are trained again"


def test_a_truncated_checkpoint_is_named(finished_run, tmp_path, capsys):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    weights = run_dir / "checkpoint-4" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    line = run(["finetune", *TINY, "--method", "ce", "--max_steps", "6", "--output_dir", str(run_dir),
                "--resume_from_checkpoint", str(run_dir / "checkpoint-4")], capsys)
    assert "checkpoint-4/model.safetensors is truncated or corrupt" in line


@pytest.mark.parametrize("content", [b"[1, 2, 3]", b"\x00\x01\x02binary", b'{"model_type": "hubtune", "num_labels": "ten"}'])
def test_a_broken_config_json_is_named(finished_run, tmp_path, capsys, content):
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(finished_run / "checkpoint-4", folder)
    (folder / "config.json").write_bytes(content)
    line = run(["ood", "--model", str(folder), "--dataset", "digits", "--ood_dataset", "noise"], capsys)
    assert "config.json" in line


@pytest.mark.parametrize("key, value, message", [
    ("architecture", 5, "architecture must be a timm model name"),
    ("architecture", "no_such_net", "timm cannot build architecture 'no_such_net'"),
    ("model_args", "x", "model_args must be a mapping"),
    ("model_args", {"in_chans": "three"}, "timm cannot build architecture"),
    ("pretrained_cfg", [1, 2], "pretrained_cfg must be a mapping"),
    ("num_classes", "ten", "num_classes must be an integer"),
    ("label_names", 7, "label_names must be a list of class names"),
    ("label_names", ["a", "b"], "label_names has 2 names but the classifier in the weights has 10 outputs"),
    ("pretrained_cfg.input_size", "big", "pretrained_cfg.input_size must be [channels, height, width]"),
    ("pretrained_cfg.crop_pct", "a", "pretrained_cfg.crop_pct must be a positive number"),
])
def test_a_wrongly_typed_timm_config_is_named(finished_run, tmp_path, capsys, key, value, message):
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(finished_run, folder, ignore=shutil.ignore_patterns("checkpoint-*"))
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "test_resnet"  # the timm layout
    if key.startswith("pretrained_cfg."):
        config["pretrained_cfg"][key.split(".")[1]] = value
    else:
        config[key] = value
    (folder / "config.json").write_text(json.dumps(config))
    before = hashes(folder)
    line = run(["ood", "--model", str(folder), "--dataset", "digits", "--ood_dataset", "noise"], capsys)
    assert "config.json" in line and str(folder) in line and message in line
    assert hashes(folder) == before


def test_weights_of_another_architecture_name_the_mismatch(finished_run, tmp_path, capsys):
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(finished_run, folder, ignore=shutil.ignore_patterns("checkpoint-*"))
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "architecture": "resnet18"}))
    line = run(["ood", "--model", str(folder), "--dataset", "digits", "--ood_dataset", "noise"], capsys)
    assert "not those of the architecture its config.json names ('resnet18')" in line
    assert "missing from the weights" in line and "other shapes" in line
    assert "cannot find a single linear classifier" not in line


def test_a_truncated_final_model_is_named(finished_run, tmp_path, capsys):
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(finished_run, folder, ignore=shutil.ignore_patterns("checkpoint-*"))
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    line = run(["ood", "--model", str(folder), "--dataset", "digits", "--ood_dataset", "noise"], capsys)
    assert "model.safetensors is truncated or corrupt" in line


# ------------------------------------------------------------------------------------------ faults during a run


def test_a_diverged_run_stops_and_writes_no_model(tmp_path, capsys):
    out = tmp_path / "out"
    line = run(["finetune", *TINY, "--method", "ce", "--max_steps", "8", "--learning_rate", "1e30",
                "--output_dir", str(out)], capsys)
    assert "step" in line and ("NaN or infinite" in line or "training loss is" in line) and "learning rate" in line
    assert not (out / "model.safetensors").exists() and not (out / "README.md").exists()


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_a_full_or_read_only_disk_keeps_the_earlier_model(finished_run, tmp_path, capsys, monkeypatch, code):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir, ignore=shutil.ignore_patterns("checkpoint-*"))
    before = hashes(run_dir)

    def no_space(*args, **kwargs):
        raise OSError(code, "simulated", str(args[1]) if len(args) > 1 else None)

    monkeypatch.setattr(hubtune.layouts.files, "save_file", no_space)
    line = run(["finetune", *TINY, "--method", "ce", "--max_steps", "2", "--save_strategy", "no",
                "--export_format", "hubtune", "--output_dir", str(run_dir), "--overwrite_output_dir"], capsys)
    assert "could not read or write" in line
    assert {k: v for k, v in hashes(run_dir).items() if k in before} == before


def test_ctrl_c_says_where_the_last_checkpoint_is(tmp_path, capsys, monkeypatch):
    from transformers import TrainerCallback

    from hubtune.training import trainer as trainer_module

    class Interrupt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise KeyboardInterrupt

    original_init = trainer_module.HubtuneTrainer.__init__

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self.add_callback(Interrupt())

    monkeypatch.setattr(trainer_module.HubtuneTrainer, "__init__", init)
    out = tmp_path / "out"
    code = main(["finetune", *TINY, "--method", "ce", "--max_steps", "6", "--save_strategy", "steps",
                 "--save_steps", "2", "--output_dir", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 130 and len(err) == 1
    assert "checkpoint-2" in err[0] and "--resume_from_checkpoint" in err[0]
    assert not (out / ".hubtune.lock").exists(), "Ctrl-C releases the output folder"


# ------------------------------------------------------------------------------------------ two runs, one folder


def test_a_second_finetune_into_a_running_ones_folder_is_refused(tmp_path, capsys, monkeypatch):
    """Issue 17: two runs started together into one --output_dir both exited 0. The second now names the first."""
    import os
    import socket
    import subprocess
    import sys

    from transformers import TrainerCallback

    from hubtune.locking import LOCK_NAME
    from hubtune.training import trainer as trainer_module

    out = tmp_path / "out"
    argv = ["finetune", *TINY, "--method", "ce", "--max_steps", "3", "--save_strategy", "no", "--output_dir", str(out)]
    second = {}

    class StartAnotherRun(TrainerCallback):
        """The same command in another process while this run trains."""

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 1 and not second:
                second["before"] = hashes(out)
                done = subprocess.run([sys.executable, "-m", "hubtune", *argv], capture_output=True, text=True,
                                      timeout=300)
                second["code"], second["err"] = done.returncode, done.stderr
                second["after"] = hashes(out)

    original_init = trainer_module.HubtuneTrainer.__init__

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self.add_callback(StartAnotherRun())

    monkeypatch.setattr(trainer_module.HubtuneTrainer, "__init__", init)
    assert main(argv) == 0
    lines = [line for line in second["err"].strip().splitlines() if line.startswith("hubtune ")]
    assert second["code"] == 1 and len(lines) == 1 and "Traceback" not in second["err"]
    assert lines[0].startswith("hubtune finetune: error: output_dir")
    assert f"in use by hubtune finetune (pid {os.getpid()} on {socket.gethostname()}, started " in lines[0]
    assert second["after"] == second["before"]
    assert (out / "model.safetensors").is_file() and not (out / LOCK_NAME).exists()


def test_a_lock_left_by_a_killed_run_does_not_block_the_next(tmp_path, capsys):
    import subprocess
    import sys

    from hubtune.locking import LOCK_NAME

    killed = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    killed.kill()
    killed.wait()
    out = tmp_path / "out"
    out.mkdir()
    import socket

    (out / LOCK_NAME).write_text(json.dumps({"pid": killed.pid, "host": socket.gethostname(),
                                             "started": "2026-12-03T18:00:00+00:00", "command": "hubtune finetune"}))
    printed = run(["finetune", *TINY, "--method", "ce", "--max_steps", "1", "--save_strategy", "no",
                   "--output_dir", str(out)], capsys, expected_code=0)
    assert f"pid {killed.pid}" in printed and "no longer running" in printed
    assert (out / "model.safetensors").is_file() and not (out / LOCK_NAME).exists()


def test_a_second_gan_into_a_running_ones_folder_is_refused(tmp_path, capsys):
    import socket
    import subprocess
    import sys

    from accelerate.state import AcceleratorState

    from hubtune.locking import LOCK_NAME

    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        out = tmp_path / "gan"
        out.mkdir()
        (out / LOCK_NAME).write_text(json.dumps({"pid": running.pid, "host": socket.gethostname(),
                                                 "started": "2026-12-03T18:00:00+00:00", "command": "hubtune gan"}))
        before = hashes(out)
        AcceleratorState._reset_state(True)
        line = run(["gan", "--max_steps", "1", "--per_device_train_batch_size", "8", "--image_size", "16",
                    "--eval_num_samples", "0", "--no_progress_bar", "--output_dir", str(out)], capsys)
        AcceleratorState._reset_state(True)
        assert line.startswith("hubtune gan: error: output_dir") and f"pid {running.pid}" in line
        assert "started 2026-12-03T18:00:00" in line and socket.gethostname() in line
        assert hashes(out) == before
    finally:
        running.kill()
        running.wait()


def sigterm_when(argv: list[str], ready, cwd: Path, waiting_for: str) -> tuple[int, str]:
    """Run ``python -m hubtune ARGV`` (a long run) until ``ready()``, send SIGTERM as a cluster scheduler does, and
    return the exit code and stderr."""
    import os
    import signal
    import subprocess
    import sys
    import time

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "hubtune", *argv], cwd=cwd, env=env, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 600
        while not ready():
            assert proc.poll() is None, f"the run ended (code {proc.returncode}) before {waiting_for}"
            assert time.monotonic() < deadline, f"no {waiting_for} within 600 s"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, err


def _sigterm_after_the_first_checkpoint(argv: list[str], out: Path, cwd: Path) -> tuple[int, str]:
    return sigterm_when(argv, lambda: any((c / "trainer_state.json").is_file() for c in out.glob("checkpoint-*")),
                        cwd, "its first checkpoint")


@pytest.mark.parametrize("command", ["finetune", "gan"])
def test_sigterm_says_where_the_last_checkpoint_is(command, tmp_path):
    out = tmp_path / "out"
    if command == "finetune":
        argv = ["finetune", *TINY, "--method", "ce", "--max_steps", "100000", "--save_strategy", "steps",
                "--save_steps", "2", "--eval_strategy", "no", "--output_dir", str(out)]
    else:
        argv = ["gan", "--max_steps", "100000", "--checkpoint_every", "2", "--per_device_train_batch_size", "8",
                "--image_size", "16", "--eval_num_samples", "0", "--no_progress_bar", "--output_dir", str(out)]
    code, err = _sigterm_after_the_first_checkpoint(argv, out, tmp_path)
    lines = [line for line in err.strip().splitlines() if line.startswith("hubtune ")]
    assert code == 143 and len(lines) == 1 and "Traceback" not in err, err[-3000:]
    assert lines[0] == err.strip().splitlines()[-1]
    assert lines[0].startswith(f"hubtune {command}: terminated (SIGTERM); the last complete checkpoint is ")
    named = Path(lines[0].split("--resume_from_checkpoint ")[1].strip())
    assert named.parent == out and named.name.startswith("checkpoint-")
    assert (named / "trainer_state.json").is_file()


# ------------------------------------------------------------------------------------------ data


def test_corrupt_and_truncated_images_are_left_out_or_named(image_folder, tmp_path, capsys):
    good = (image_folder / "red" / "0.png").read_bytes()
    (image_folder / "red" / "truncated.png").write_bytes(good[: len(good) // 2])
    (image_folder / "blue" / "not-an-image.png").write_bytes(b"hello")
    out = run(["finetune", *TINY, "--dataset", str(image_folder), "--method", "ce", "--max_steps", "1",
               "--output_dir", str(tmp_path / "a")], capsys, expected_code=0)
    assert "Leaving out 2 unreadable image(s)" in out
    line = run(["finetune", *TINY, "--dataset", str(image_folder), "--method", "ce", "--max_steps", "1",
                "--strict_data", "true", "--output_dir", str(tmp_path / "b")], capsys)
    assert "Cannot read image" in line and ("truncated.png" in line or "not-an-image.png" in line)


@pytest.mark.parametrize("layout", ["empty", "no-image-files"])
def test_a_folder_without_images_says_so_and_which_extensions_are_read(finished_run, layout, tmp_path, capsys):
    folder = tmp_path / "ood"
    (folder / "sub").mkdir(parents=True)
    if layout == "no-image-files":
        (folder / "notes.txt").write_text("no images here")
        (folder / "sub" / "data.csv").write_text("a,b\n1,2\n")
    before = hashes(finished_run)
    line = run(["ood", "--model", str(finished_run), "--dataset", "digits", "--ood_dataset", str(folder),
                "--output_dir", str(tmp_path / "results")], capsys)
    assert f"OOD folder {str(folder)!r} holds no images" in line and ".png, .jpg" in line
    assert "corresponds to no data" not in line
    assert hashes(finished_run) == before
    line = run(["finetune", *TINY, "--dataset", str(folder), "--output_dir", str(tmp_path / "out")], capsys)
    assert f"{str(folder)!r} holds no images" in line and ".png, .jpg" in line


def test_ood_has_the_strict_data_flag_that_its_advice_names(finished_run, tmp_path, capsys):
    """`hubtune ood` leaves unreadable in-distribution images out and advises --strict_data: it must have it."""
    folder = tmp_path / "digits-folder"
    for label in range(10):
        (folder / str(label)).mkdir(parents=True)
        for k in range(5):
            Image.new("L", (8, 8), 20 * label + k).save(folder / str(label) / f"{k}.png")
    good = (folder / "3" / "0.png").read_bytes()
    (folder / "3" / "truncated.png").write_bytes(good[: len(good) // 2])
    before = hashes(finished_run)
    argv = ["ood", "--model", str(finished_run), "--dataset", str(folder), "--ood_dataset", "noise",
            "--output_dir", str(tmp_path / "results")]
    out = run(argv, capsys, expected_code=0)
    advice = next(line for line in out.splitlines() if "unreadable image" in line)
    assert "truncated.png" in advice and "--strict_data" in advice
    line = run([*argv, "--strict_data", "true"], capsys)
    assert "Cannot read image" in line and "truncated.png" in line and "--strict_data" in line
    assert hashes(finished_run) == before


def test_one_class_and_a_last_batch_of_one(image_folder, tmp_path, capsys):
    import shutil

    shutil.rmtree(image_folder / "blue")
    line = run(["finetune", *TINY, "--dataset", str(image_folder), "--output_dir", str(tmp_path / "a")], capsys)
    assert "only one class" in line
    # 17 training images (of 21 after a 0.2 hold-out) with batch 16: a last batch of one would break BatchNorm
    for k in range(12, 21):
        Image.new("RGB", (20, 20 + k), (5, 5, 5 * k)).save(image_folder / "red" / f"extra{k}.png")
    (image_folder / "green").mkdir()
    for k in range(1):
        Image.new("RGB", (20, 20), (5, 200, 5)).save(image_folder / "green" / f"{k}.png")
    out = run(["finetune", *TINY[:-6], "--dataset", str(image_folder), "--method", "ce", "--num_train_epochs", "1",
               "--batch-size", "16", "--disable_tqdm", "true", "--image_size", "32", "--eval_fraction", "0.2",
               "--output_dir", str(tmp_path / "b")], capsys, expected_code=0)
    assert "last batch of one" in out


def test_ood_with_a_dataset_of_other_classes_is_refused_naming_both(finished_run, image_folder, tmp_path, capsys):
    """Issue 17: `hubtune ood --model M --dataset D` with D's classes not M's printed an accuracy."""
    line = run(["ood", "--model", str(finished_run), "--dataset", str(image_folder), "--ood_dataset", "noise",
                "--output_dir", str(tmp_path / "ood")], capsys)
    assert "The model's classes are not those of" in line
    assert "[0, 1, 2, 3, 4, 5, 6, 7, ... (10 in all)]" in line and "[blue, red]" in line
    assert not (tmp_path / "ood" / "ood_results.json").exists()


# ------------------------------------------------------------------------------------------ the Hub


@pytest.mark.parametrize("fault, message", [
    (401, "401"), (403, "403"), (500, "server error"), ("drop", "connection"), ("garbage", "Could not"),
])
def test_hub_failures_are_one_line_and_leave_the_folder_alone(finished_run, local_hub, hub_token, hub_repo_id,
                                                              capsys, fault, message):
    before = hashes(finished_run)
    local_hub.inject_fault("commit", fault, count=5)
    line = run(["push", str(finished_run), hub_repo_id, "--hub_token", hub_token], capsys)
    assert message.lower() in line.lower() and hub_token not in line
    assert hashes(finished_run) == before


def test_a_push_of_nan_weights_is_refused_and_the_good_model_on_the_hub_stays(finished_run, local_hub, hub_token,
                                                                             hub_repo_id, tmp_path, capsys):
    import shutil

    from safetensors.torch import load_file, save_file

    run(["push", str(finished_run), hub_repo_id, "--hub_token", hub_token], capsys, expected_code=0)
    remote = local_hub.files(hub_repo_id)
    folder = tmp_path / "diverged"
    shutil.copytree(finished_run, folder, ignore=shutil.ignore_patterns("checkpoint-*"))
    state = load_file(folder / "model.safetensors")
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name] = state[name].clone().fill_(float("nan"))
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    before = hashes(folder)
    line = run(["push", str(folder), hub_repo_id, "--hub_token", hub_token], capsys)
    assert line.startswith("hubtune push: error: Refusing to upload") and "model.safetensors" in line and name in line
    assert "NaN or inf" in line and "nothing was uploaded" in line
    assert local_hub.files(hub_repo_id) == remote and hashes(folder) == before


def test_an_offline_push_says_so(finished_run, hub_repo_id, hub_token, capsys, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    line = run(["push", str(finished_run), hub_repo_id, "--hub_token", hub_token], capsys)
    assert "HF_HUB_OFFLINE=1" in line


@pytest.mark.parametrize("argv", [
    ["ood", "--model", "someorg/not-cached", "--dataset", "digits", "--ood_dataset", "noise"],
    ["finetune", "--model", "someorg/not-cached"],
    ["finetune", "--model", "someorg/not-cached", "--pretrained"],
    ["finetune", "--model", "hf-hub:someorg/not-cached"],
    ["finetune", "--model", "resnet18", "--pretrained"],
])
def test_a_hub_id_while_offline_names_the_offline_setting(argv, tmp_path, capsys, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    line = run([*argv, "--output_dir", str(tmp_path / "out")], capsys)
    assert "HF_HUB_OFFLINE=1 is set" in line and "not in the local Hugging Face cache" in line
    assert "has no config.json" not in line and "Unknown backbone" not in line
    assert argv[0] == "ood" or not (tmp_path / "out").exists()  # ood makes its results folder first


@pytest.mark.parametrize("argv, option", [
    (["finetune", "--model", "resnet18", "--pretrained"], ["--pretrained", "false"]),
    (["gan", "--discriminator", "timm:resnet18", "--max_steps", "1", "--per_device_train_batch_size", "8",
      "--image_size", "16", "--eval_num_samples", "0", "--no_progress_bar"], ["--discriminator", "timm-random:resnet18"]),
])
def test_offline_pretrained_weights_name_the_commands_own_option_for_random_weights(argv, option, tmp_path, capsys,
                                                                                    monkeypatch):
    """Issue 28: `hubtune gan` with a timm discriminator offline suggested --no-pretrained, which neither command has."""
    import huggingface_hub.constants
    from accelerate.state import AcceleratorState

    from hubtune.commands import COMMANDS

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    AcceleratorState._reset_state(True)
    line = run([*argv, "--output_dir", str(tmp_path / "out")], capsys)
    AcceleratorState._reset_state(True)
    assert f"or pass {' '.join(option)} to start from random weights" in line and "--no-pretrained" not in line
    # the option named is one the command has
    import importlib

    from hubtune.arguments import parse_command_line

    command = importlib.import_module(COMMANDS[argv[0]][0])
    parse_command_line(command.build_parser(), [*argv[1:], *option, "--output_dir", str(tmp_path / "other")])


def test_random_weights_from_a_folder_are_named_by_their_architecture_in_the_card(image_folder, tmp_path, capsys):
    """Issue 28: a card trained from local-dir:FOLDER with --pretrained false named the architecture after the folder
    (the folder gave only the architecture); with its weights, the folder is the base model."""
    import timm

    folder = tmp_path / "timm_r10"
    timm.models.save_for_hf(timm.create_model("resnet10t", num_classes=0), str(folder), safe_serialization=True)
    argv = ["finetune", *TINY[2:], "--model", f"local-dir:{folder}", "--dataset", str(image_folder), "--method", "ce",
            "--max_steps", "1", "--save_strategy", "no", "--eval_strategy", "no"]
    run([*argv, "--pretrained", "false", "--output_dir", str(tmp_path / "random")], capsys, expected_code=0)
    card = (tmp_path / "random" / "README.md").read_text()
    assert "timm_r10" not in card and "name: resnet10t-" in card and "Backbone: `resnet10t` (timm), random" in card
    assert json.loads((tmp_path / "random" / "hubtune_run.json").read_text())["base_model"] == "resnet10t"
    run([*argv, "--pretrained", "true", "--output_dir", str(tmp_path / "pretrained")], capsys, expected_code=0)
    assert "timm_r10" in (tmp_path / "pretrained" / "README.md").read_text()


def test_a_failed_gan_push_leaves_the_generator_folder_alone(tmp_path, local_hub, hub_token, hub_repo_id, capsys):
    from accelerate.state import AcceleratorState

    out = tmp_path / "gan"
    argv = ["gan", "--max_steps", "2", "--per_device_train_batch_size", "8", "--image_size", "16",
            "--eval_num_samples", "0", "--no_progress_bar", "--output_dir", str(out)]
    AcceleratorState._reset_state(True)
    assert main(argv) == 0
    before = hashes(out)
    AcceleratorState._reset_state(True)
    local_hub.inject_fault("commit", 403, count=5)
    line = run([*argv, "--resume_from_checkpoint", "true", "--push_to_hub",
                "--hub_model_id", hub_repo_id, "--hub_token", hub_token], capsys)
    AcceleratorState._reset_state(True)
    assert "403" in line and hub_token not in line
    after = hashes(out)
    assert after["README.md"] == before["README.md"] and hub_repo_id not in (out / "README.md").read_text()


def test_a_gan_output_folder_of_another_run_is_not_overwritten(tmp_path, capsys):
    from accelerate.state import AcceleratorState

    out = tmp_path / "gan"
    argv = ["gan", "--max_steps", "1", "--per_device_train_batch_size", "8", "--image_size", "16",
            "--eval_num_samples", "0", "--no_progress_bar", "--output_dir", str(out)]
    AcceleratorState._reset_state(True)
    assert main(argv) == 0
    before = hashes(out)
    AcceleratorState._reset_state(True)
    line = run(argv, capsys)
    AcceleratorState._reset_state(True)
    assert "already holds another run" in line and hashes(out) == before
