"""A tracker that is not installed (--report_to / --log_with) is one line naming the package, before any work."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest

import hubtune.trackers
from hubtune.commands import main

MISSING = {"tensorboard", "tensorboardX", "wandb"}


@pytest.fixture
def without_trackers(monkeypatch):
    monkeypatch.setattr(hubtune.trackers, "_installed", lambda module: module not in MISSING)


def _one_line_error(capsys):
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_finetune_report_to_a_missing_tracker_is_one_line_before_any_work(without_trackers, tmp_path, capsys,
                                                                          monkeypatch):
    import hubtune.training.finetune as finetune

    monkeypatch.setattr(finetune, "load_image_classification_data",
                        lambda *a, **k: pytest.fail("the data was loaded before the tracker was checked"))
    assert main(["finetune", "--report_to", "tensorboard", "--output_dir", str(tmp_path / "out")]) == 1
    err = _one_line_error(capsys)
    assert "--report_to tensorboard needs the tensorboard package" in err
    assert "pip install 'hubtune[tensorboard]'" in err
    assert not (tmp_path / "out").exists()


def test_gan_log_with_a_missing_tracker_is_one_line(without_trackers, tmp_path, capsys):
    assert main(["gan", "--log_with", "wandb", "--output_dir", str(tmp_path / "out")]) == 1
    err = _one_line_error(capsys)
    assert "--log_with wandb needs the wandb package" in err and "pip install wandb" in err
    assert not (tmp_path / "out").exists()


def test_installed_and_unknown_trackers_pass_the_check():
    hubtune.trackers.check_trackers_installed([], "--report_to")
    hubtune.trackers.check_trackers_installed(["some_future_tracker"], "--report_to")  # left to transformers
    hubtune.trackers.check_trackers_installed("none", "--report_to")


def test_the_tensorboard_extra_exists():
    setup = configparser.ConfigParser()
    setup.read(Path(__file__).resolve().parent.parent / "setup.cfg")
    extras = setup["options.extras_require"]
    assert "tensorboard" in extras["tensorboard"].split()
    assert {"tensorboard", "wandb", "mlflow"} <= set(extras["trackers"].split())
