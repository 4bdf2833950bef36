"""examples/ood_demo.py: the near-OOD split of the digits, and one short run per method trained with exactly the
settings hubtune finetune chooses, recorded and reported."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from hubtune.data import load_image_classification_data

SCRIPT = Path(__file__).resolve().parent.parent / "examples" / "ood_demo.py"


@pytest.fixture(scope="module")
def demo():
    spec = importlib.util.spec_from_file_location("ood_demo", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_split_classes_keeps_the_chosen_digits_relabelled_and_holds_out_the_others(demo):
    data = load_image_classification_data("digits", eval_fraction=0.5, seed=3)
    in_data, held_out = demo.split_classes(data.train, data.eval, data.label_names, [7, 2])
    assert in_data["train"].features["label"].names == ["7", "2"]
    for part, source in ((in_data["train"], data.train), (in_data["test"], data.eval)):
        labels = source["label"]
        assert part["label"] == [{7: 0, 2: 1}[y] for y in labels if y in (7, 2)]
    assert held_out.column_names == ["image"]
    assert len(held_out) == sum(y not in (7, 2) for y in data.eval["label"])
    first_out = next(i for i, y in enumerate(data.eval["label"]) if y not in (7, 2))
    assert held_out[0]["image"].tobytes() == data.eval[first_out]["image"].tobytes()


def test_runs_train_with_hubtunes_own_settings_and_are_recorded_skipped_and_reported(demo, tmp_path, capsys):
    results = tmp_path / "r.jsonl"
    argv = ["--model", "resnet10t", "--image-size", "16", "--methods", "ce", "adaptivemix", "ce@max_grad_norm=0.5",
            "--max-steps", "2",
            "--epochs", "3", "--scores", "msp", "mahalanobis", "--output-dir", str(tmp_path / "out"),
            "--results", str(results)]
    demo.main(argv)
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    assert [line["method"] for line in lines] == ["ce", "adaptivemix", "ce@max_grad_norm=0.5"]
    assert lines[2]["settings"]["max_grad_norm"] == 0.5  # an option after @ is given over the defaults and recorded
    for line in lines[:2]:
        # from random weights: hubtune's general defaults, not a fine-tuning recipe and nothing of the demo's own
        settings = line["settings"]
        assert (settings["optim"], settings["learning_rate"], settings["max_grad_norm"]) == ("adamw_torch", 0.001, 1.0)
        assert settings["per_device_train_batch_size"] == 64 and settings["max_steps"] == 2
        counts = line["num_images"]
        assert counts["skimage-photos"] == counts["noise"] == counts["in"]
        assert counts["in"] + counts["held-out-digits"] == 899  # half of the 1,797 digits held out
        assert set(line["metrics"]) == {"skimage-photos", "noise", "held-out-digits"}
        assert set(line["metrics"]["noise"]) == {"msp", "mahalanobis"}
    assert "alpha" in lines[1]["settings"]  # the method's knobs are recorded too
    saved = json.loads((tmp_path / "out" / "seed0" / "ce" / "ood_results.json").read_text())
    assert {e["ood_dataset"] for e in saved["entries"]} == {"skimage-photos", "noise", "held-out-digits"}
    capsys.readouterr()
    demo.main(argv)  # a rerun finds both runs in the file and trains nothing
    out = capsys.readouterr().out
    assert out.count("skipped") == 3 and len(results.read_text().splitlines()) == 3
    demo.main(["--model", "resnet10t", "--image-size", "16", "--epochs", "3", "--max-steps", "2", "--scores", "msp",
               "--report", str(results)])
    table = capsys.readouterr().out
    assert "| adaptivemix | 1 |" in table and "| ce@max_grad_norm=0.5 | 1 |" in table
    assert "AUROC wins held-out-digits" in table
    demo.main(["--model", "resnet10t", "--image-size", "32", "--epochs", "3", "--report", str(results)])
    assert "No results with these settings." in capsys.readouterr().out
