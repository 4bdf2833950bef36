"""``hubtune compare``: paired runs over seeds, shared settings, resumable JSONL, the report and its statistics."""

from __future__ import annotations

import json

import pytest
import timm
import torch

from hubtune.commands import main
from hubtune.data import few_shot_subset, load_image_classification_data
from hubtune.errors import DatasetError, MethodError
from hubtune.training import compare as compare_module
from hubtune.training.compare import parse_method_label, read_runs, summarize


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    timm.models.save_for_hf(timm.create_model("test_resnet", num_classes=0), str(folder), safe_serialization=True)
    return f"local-dir:{folder}"


def _argv(weights, out, *extra):
    return ["compare", "--model", weights, "--image_size", "32", "--train_samples_per_class", "2",
            "--max_eval_samples", "20", "--max_steps", "2", "--per_device_train_batch_size", "8", "--seeds", "2",
            "--output_dir", str(out), "--disable_tqdm", "true", *extra]


def test_compare_writes_paired_runs_and_a_report_and_a_rerun_trains_nothing(weights, tmp_path, capsys, monkeypatch):
    out = tmp_path / "cmp"
    assert main(_argv(weights, out, "--methods", "ce", "core-tuning", "adaptivemix")) == 0
    printed = capsys.readouterr().out  # the library logs its progress; the command shows it on stdout
    assert "Comparing ce, core-tuning, adaptivemix over seeds 0-1: 0 of 6 runs already finished" in printed
    assert "[1/6] ce, seed 0: accuracy " in printed and "[6/6] adaptivemix, seed 1: accuracy " in printed
    assert "| core-tuning | 2 |" in printed and f"Report: {out / 'compare.md'}" in printed
    rows = read_runs(out)
    assert sorted((r["label"], r["seed"]) for r in rows) == sorted(
        (m, s) for m in ("ce", "core-tuning", "adaptivemix") for s in (0, 1))
    assert {r["train_samples"] for r in rows} == {20} and {r["eval_samples"] for r in rows} == {20}
    # one comparison, one set of training settings: the first method's recipe, for every method
    for r in rows:
        assert r["settings"]["weight_decay"] == {"value": 0.0001, "source": "recipe of ce"}
        assert r["settings"]["max_grad_norm"] == {"value": 0.0, "source": "recipe of ce"}
        assert r["settings"]["max_steps"] == {"value": 2, "source": "given"}
    md = (out / "compare.md").read_text()
    assert "| core-tuning | 2 |" in md and "| adaptivemix | 2 |" in md and "paired p" in md
    assert "| max_grad_norm | 0.0 | recipe of ce |" in md
    report = json.loads((out / "compare.json").read_text())
    assert report["baseline"] == "ce" and [m["label"] for m in report["methods"]] == ["ce", "core-tuning", "adaptivemix"]
    assert len(report["methods"][1]["differences"]) == 2
    assert (out / "compare_differences.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(compare_module, "_run_one", no_training)
    assert main(_argv(weights, out, "--methods", "ce", "core-tuning", "adaptivemix")) == 0
    assert "6 of 6 runs already finished" in capsys.readouterr().out
    assert len(read_runs(out)) == 6


def test_an_interrupted_comparison_loses_only_the_run_in_progress(weights, tmp_path, capsys, monkeypatch):
    out = tmp_path / "cmp"
    real, calls = compare_module._run_one, []

    def interrupted_third(label, *args, **kwargs):
        calls.append(label)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(label, *args, **kwargs)

    monkeypatch.setattr(compare_module, "_run_one", interrupted_third)
    assert main(_argv(weights, out, "--methods", "ce", "core-tuning")) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the run of ce with seed 1 was lost; 2 of 4 runs are saved" in err[0]
    assert len(read_runs(out)) == 2 and not (out / ".run-in-progress").exists()
    calls.clear()
    monkeypatch.setattr(compare_module, "_run_one", lambda label, *a, **k: (calls.append(label), real(label, *a, **k))[1])
    assert main(_argv(weights, out, "--methods", "ce", "core-tuning")) == 0
    assert calls == ["ce", "core-tuning"] and len(read_runs(out)) == 4


def test_method_recipes_give_each_method_its_own(weights, tmp_path):
    out = tmp_path / "cmp"
    assert main(_argv(weights, out, "--methods", "ce", "adaptivemix", "--seeds", "1", "--method_recipes", "true")) == 0
    settings = {r["label"]: r["settings"] for r in read_runs(out)}
    assert settings["ce"]["max_grad_norm"] == {"value": 0.0, "source": "recipe of ce"}
    assert settings["adaptivemix"]["max_grad_norm"] == {"value": 1.0, "source": "recipe of adaptivemix"}
    assert "own training recipe (`--method_recipes`)" in (out / "compare.md").read_text()


def test_an_entry_can_train_with_another_methods_recipe(weights, tmp_path):
    out = tmp_path / "cmp"
    assert main(_argv(weights, out, "--methods", "ce", "ce:recipe=bss", "--seeds", "1", "--method_recipes", "true")) == 0
    settings = {r["label"]: r["settings"] for r in read_runs(out)}
    assert settings["ce"]["lr_multipliers"] == {"value": None, "source": "default"}
    assert settings["ce:recipe=bss"]["lr_multipliers"] == {"value": "backbone=0.1", "source": "recipe of bss"}
    assert settings["ce:recipe=bss"]["filter_bias_and_bn"] == {"value": False, "source": "recipe of bss"}
    # without --method_recipes every method trains with the first entry's recipe, borrowed or not
    out2 = tmp_path / "cmp2"
    assert main(_argv(weights, out2, "--methods", "ce:recipe=bss", "core-tuning", "--seeds", "1")) == 0
    assert {r["settings"]["weight_decay"]["value"] for r in read_runs(out2)} == {5e-4}


def test_other_settings_in_the_same_folder_are_refused_in_one_line(weights, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(_argv(weights, out, "--methods", "ce", "--seeds", "1")) == 0
    capsys.readouterr()
    assert main(_argv(weights, out, "--methods", "ce", "--seeds", "1", "--learning_rate", "0.5")) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds 1 run(s) of a comparison with other settings" in err[0]
    assert len(read_runs(out)) == 1  # nothing lost
    assert main(_argv(weights, out, "--methods", "ce", "--seeds", "1", "--learning_rate", "0.5",
                      "--overwrite_output_dir", "true")) == 0
    assert len(read_runs(out)) == 1 and list(out.glob("compare.jsonl.replaced-*"))


def test_more_seeds_in_the_same_folder_reuse_the_finished_ones(weights, tmp_path, capsys, monkeypatch):
    """Extending a comparison with --seed N (another command, same settings) keeps the runs already made."""
    out = tmp_path / "cmp"
    assert main(_argv(weights, out, "--methods", "ce", "--seeds", "1")) == 0
    assert main(_argv(weights, out, "--methods", "ce", "--seeds", "1", "--seed", "1")) == 0
    assert sorted(r["seed"] for r in read_runs(out)) == [0, 1]
    assert json.loads((out / "compare.json").read_text())["methods"][0]["seeds"] == [1]
    capsys.readouterr()

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(compare_module, "_run_one", no_training)
    assert main(_argv(weights, out, "--methods", "ce", "--seeds", "2")) == 0
    assert json.loads((out / "compare.json").read_text())["methods"][0]["seeds"] == [0, 1]


def test_the_fingerprint_ignores_options_left_at_their_defaults():
    """An option added later (a newer hubtune or transformers), at a default that trains as before, leaves the
    fingerprint as it was; the same option set away from its default changes it."""
    import dataclasses

    model_args, data_args, _, compare_args, training_args = compare_module.parse_compare_args(
        ["--dataset", "digits", "--methods", "ce", "--train_samples_per_class", "5"])

    def fingerprint(data, recipe=None, every_option=False):
        return compare_module._fingerprint(model_args, data, compare_args, recipe or {"learning_rate": 0.01},
                                           training_args, every_option=every_option)

    @dataclasses.dataclass
    class NewerDataArguments(type(data_args)):
        new_option: int = 7

    newer = NewerDataArguments(**dataclasses.asdict(data_args))
    assert fingerprint(newer) == fingerprint(data_args)
    newer.new_option = 8
    assert fingerprint(newer) != fingerprint(data_args)
    assert fingerprint(data_args, {"learning_rate": 0.02}) != fingerprint(data_args)
    # the earlier form (every option hashed) tells the two apart: journals written under it are still read
    newer.new_option = 7
    assert fingerprint(newer, every_option=True) != fingerprint(data_args, every_option=True)


def test_a_journal_of_the_earlier_fingerprint_form_is_reused(weights, tmp_path, monkeypatch):
    out = tmp_path / "cmp"
    argv = _argv(weights, out, "--methods", "ce", "--seeds", "1")
    assert main(argv) == 0
    comparison = compare_module._plan(*compare_module.parse_compare_args(argv[1:]))
    journal = out / "compare.jsonl"
    rows = [json.loads(line) for line in journal.read_text().splitlines()]
    assert [r["fingerprint"] for r in rows] == [comparison.fingerprint] != [comparison.earlier_fingerprint]
    journal.write_text("".join(json.dumps({**r, "fingerprint": comparison.earlier_fingerprint}) + "\n" for r in rows))

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(compare_module, "_run_one", no_training)
    assert main(argv) == 0
    assert json.loads((out / "compare.json").read_text())["methods"][0]["seeds"] == [0]


def test_method_labels_with_knobs_and_knobs_that_apply_to_no_method():
    assert parse_method_label("core-tuning:eta=0.1,temperature=0.2") == ("core-tuning", {"eta": 0.1, "temperature": 0.2})
    assert parse_method_label("adaptivemix:clean_ce=false") == ("adaptivemix", {"clean_ce": False})
    assert parse_method_label("ce:recipe=bss") == ("ce", {"recipe": "bss"})
    with pytest.raises(MethodError, match="'sigma=1' is not knob=value for a knob of core-tuning"):
        parse_method_label("core-tuning:sigma=1")
    with pytest.raises(MethodError, match="--sigma applies to none of --methods ce core-tuning"):
        _knob_check(["ce", "core-tuning"], sigma=0.1)
    with pytest.raises(MethodError, match="--preset reference is offered by none of --methods ce"):
        _knob_check(["ce"], preset="reference")
    _knob_check(["ce", "core-tuning"], eta=0.1)  # a knob of one of the methods is fine


def _knob_check(labels, **given):
    from hubtune.training.finetune import method_arguments_class

    compare_module._check_knobs_apply(labels, method_arguments_class(with_method=False)(**given))


def test_few_shot_subsets_are_stratified_seeded_and_checked():
    data = load_image_classification_data("digits")
    a, b = few_shot_subset(data.train, 3, seed=1), few_shot_subset(data.train, 3, seed=1)
    assert a["label"] == b["label"] and len(a) == 30
    assert sorted(a["label"]) == sorted(list(range(10)) * 3)
    with pytest.raises(DatasetError, match="Class '0' has .* fewer than train_samples_per_class=500"):
        few_shot_subset(data.train, 500, seed=0)


def test_the_data_order_of_a_seed_does_not_depend_on_what_a_method_draws(weights, tmp_path):
    from transformers import TrainingArguments, set_seed

    from hubtune.data import build_transforms, collate_image_batch, with_transforms
    from hubtune.modeling import HubtuneForImageClassification
    from hubtune.training import HubtuneTrainer

    data = load_image_classification_data("digits", max_train_samples=40)
    orders = []
    for draws in (0, 1000):
        set_seed(3)
        model = HubtuneForImageClassification.from_backbone("test_resnet", id2label=data.id2label, image_size=16)
        trainer = HubtuneTrainer(model=model, args=TrainingArguments(str(tmp_path), seed=3, report_to=[], use_cpu=True,
                                                                     per_device_train_batch_size=8,
                                                                     remove_unused_columns=False),
                                 train_dataset=with_transforms(data.train, build_transforms(model.preprocessing, True)),
                                 data_collator=collate_image_batch)
        loader = trainer.get_train_dataloader()
        labels = []
        for epoch in range(2):
            if hasattr(loader, "set_epoch"):
                loader.set_epoch(epoch)
            torch.rand(draws)  # a method drawing random numbers between batches
            labels.append([int(y) for batch in loader for y in batch["labels"]])
        orders.append((labels, model.classifier.weight.detach().clone()))
    assert orders[0][0] == orders[1][0] and orders[0][0][0] != orders[0][0][1]
    assert torch.equal(orders[0][1], orders[1][1])  # the same initial classifier


def test_summary_statistics_against_hand_counts():
    rows = []
    for seed, (ce, ct, ms_ce, ms_ct) in enumerate([(0.80, 0.85, 1.0, 1.1), (0.70, 0.74, 1.0, 1.2), (0.90, 0.89, 2.0, 2.0)]):
        rows.append({"label": "ce", "seed": seed, "accuracy": ce, "seconds_per_step": ms_ce, "settings": {},
                     "train_samples": 1, "eval_samples": 1})
        rows.append({"label": "core-tuning", "seed": seed, "accuracy": ct, "seconds_per_step": ms_ct, "settings": {},
                     "train_samples": 1, "eval_samples": 1})
    report = summarize(rows, ["ce", "core-tuning"])
    ct = report["methods"][1]
    assert ct["differences"] == pytest.approx([0.05, 0.04, -0.01])
    assert ct["delta"] == pytest.approx(0.08 / 3) and (ct["wins"], ct["losses"]) == (2, 1)
    # the 8 sign patterns of (5, 4, -1) (hundredths) sum to +-10, +-8, +-2, +-0; the observed sum is 8: 4 of 8
    assert ct["p"] == pytest.approx(4 / 8)
    assert ct["time_ratio"] == pytest.approx(1.1)  # median of 1.1, 1.2, 1.0
    assert "| core-tuning | 3 | 82.67 ± 7.77 | +2.67 | 2/3 | 0.500 | 1.10 |" in report["markdown"]


def test_co_tuning_on_a_random_backbone_is_refused_before_any_run(tmp_path, capsys):
    out = tmp_path / "cmp"
    code = main(["compare", "--model", "test_resnet", "--methods", "ce", "co-tuning", "--seeds", "2",
                 "--train_samples_per_class", "2", "--max_steps", "1", "--output_dir", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1, err
    assert "co-tuning needs the pretrained weights' own classifier" in err and "drop co-tuning from --methods" in err
    assert not (out / "compare.jsonl").exists()  # nothing trained, not even ce


def test_the_library_says_its_progress_through_the_run_messages(weights, tmp_path, capsys, monkeypatch):
    """No print() in the library: progress and the report are records of the ``hubtune.run`` logger
    (:mod:`hubtune.messages`), which a caller may route elsewhere."""
    import logging

    from hubtune.messages import RUN_LOGGER
    from hubtune.training.compare import parse_compare_args, run_compare

    records = []

    class Collect(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    monkeypatch.setattr(logging.getLogger(RUN_LOGGER), "handlers", [Collect()])
    run_compare(*parse_compare_args(_argv(weights, tmp_path / "cmp", "--methods", "ce", "--seeds", "1")[1:]))
    said = "\n".join(records)
    assert "0 of 1 runs already finished" in said and "[1/1] ce, seed 0: accuracy " in said and "| ce | 1 |" in said
    assert "[1/1]" not in capsys.readouterr().out


# ------------------------------------------------------------------------------------------ the journal


def test_the_journal_writes_whole_lines_and_repairs_a_cut_one(tmp_path, capsys):
    from hubtune.training.compare_journal import RunJournal

    row = {"label": "ce", "seed": 0, "accuracy": 0.5, "seconds_per_step": 0.1, "train_samples": 4, "eval_samples": 2,
           "settings": {}, "fingerprint": "f"}
    journal = RunJournal(tmp_path)
    journal.append(row)
    journal.append({**row, "seed": 1})
    whole = journal.path.read_bytes()
    assert whole.count(b"\n") == 2 and [r["seed"] for r in read_runs(tmp_path)] == [0, 1]
    # a kill during the third write: the rows before it are read, the repair cuts it off and says so, in one line
    journal.path.write_bytes(whole + json.dumps({**row, "seed": 2}).encode()[:30])
    assert [r["seed"] for r in read_runs(tmp_path)] == [0, 1]
    journal.repair()
    assert journal.path.read_bytes() == whole
    assert capsys.readouterr().out == (f"Note: line 3 of {journal.path} was cut short (a run stopped while writing it) "
                                       "and is dropped; that run is trained again.\n")
    journal.append({**row, "seed": 2})  # does not glue onto anything
    assert [r["seed"] for r in read_runs(tmp_path)] == [0, 1, 2]
    # a complete last record that only lost its newline (an edited file) is kept, and gets its newline
    journal.path.write_bytes(journal.path.read_bytes()[:-1])
    journal.repair()
    assert journal.path.read_bytes().endswith(b"}\n") and [r["seed"] for r in read_runs(tmp_path)] == [0, 1, 2]


def test_a_short_write_leaves_no_half_line(tmp_path, monkeypatch):
    import os

    from hubtune.training.compare_journal import RunJournal

    journal = RunJournal(tmp_path)
    journal.append({"label": "ce", "seed": 0, "accuracy": 0.5, "seconds_per_step": 0.1, "train_samples": 4,
                    "eval_samples": 2, "settings": {}})
    before = journal.path.read_bytes()
    real_write = os.write

    def disk_full(fd, data):
        return real_write(fd, data[: len(data) // 2])  # what a full disk does to a large write

    monkeypatch.setattr(os, "write", disk_full)
    with pytest.raises(OSError, match="No space left"):
        journal.append({"label": "ce", "seed": 1, "accuracy": 0.5, "seconds_per_step": 0.1, "train_samples": 4,
                        "eval_samples": 2, "settings": {"x": "y" * 1000}})
    assert journal.path.read_bytes() == before
