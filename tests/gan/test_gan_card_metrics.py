"""A GAN card never publishes an FID from random features (metrics.json "comparable": false); it says how to get a
comparable one. The random-features warning is printed once."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

from hubtune.gan import metrics as gan_metrics
from hubtune.hub.generator_card import render_generator_card

RANDOM = {"fid": 7.6927, "kid_mean": 0.04571, "kid_std": 0.00077, "feature_extractor": "timm-random:resnet18:0",
          "feature_dim": 512, "num_real": 500, "num_fake": 500, "comparable": False}


def _card(metrics):
    return str(render_generator_card(arch="dcgan", image_size=32, channels=1, latent_dim=64, metrics=metrics))


def test_a_non_comparable_fid_stays_out_of_the_card_which_says_how_to_get_one():
    card = _card(RANDOM)
    assert "| FID |" not in card and "7.693" not in card and "45.7" not in card
    assert "No comparable FID/KID" in card and "timm-random:resnet18:0" in card
    for option in ("--eval_feature_extractor inception", "inception:<pt_inception-2015-12-05-6726825d.pth>",
                   "timm:<model>", "local-dir:<timm folder>", "HUBTUNE_FID_EXTRACTOR", "evaluate_generator"):
        assert option in card, option
    comparable = _card({**RANDOM, "comparable": True, "feature_extractor": "local-dir:mobilenetv2_100.tv_in1k"})
    assert "| FID | 7.693 |" in comparable and "No comparable FID/KID" not in comparable


def test_the_auto_fallback_warns_once_and_logs_nothing(monkeypatch, tmp_path, caplog):
    monkeypatch.delenv(gan_metrics.ENV_EXTRACTOR, raising=False)
    monkeypatch.setattr(gan_metrics, "DEFAULT_PRETRAINED_FOLDER", tmp_path / "no-such-folder")
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO):
        warnings.simplefilter("always")
        gan_metrics.build_feature_extractor("auto")
    assert len([w for w in caught if "CANNOT compare" in str(w.message)]) == 1
    assert not [r for r in caplog.records if "CANNOT compare" in r.getMessage()]


def test_a_gan_run_with_random_features_prints_the_warning_once_and_keeps_the_figure_off_its_card(tmp_path):
    home = tmp_path / "home"  # no ~/.cache/hubtune MobileNetV2 folder: "auto" falls back to random features
    home.mkdir()
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "HOME": str(home), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(repo)}
    env.pop(gan_metrics.ENV_EXTRACTOR, None)
    proc = subprocess.run(
        [sys.executable, "-m", "hubtune", "gan", "--max_steps", "2", "--eval_num_samples", "20", "--eval_batch_size",
         "10", "--output_dir", str(tmp_path / "out"), "--no_progress_bar"],
        env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (proc.stdout + proc.stderr).count("CANNOT compare or rank models") == 1, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["comparable"] is False
    card = (tmp_path / "out" / "README.md").read_text()
    assert "| FID |" not in card and "No comparable FID/KID" in card
