"""``hubtune compare``: does a method help on MY data? Several methods, several seeds, paired by seed.

For each seed every method gets the same labelled subset (``train_samples_per_class`` images per class drawn with
the seed), the same evaluation split, the same initial classifier and the same data order (the Trainer's seedable
sampler draws each epoch's order from the seed and the epoch, whatever the methods draw in between); the random
augmentations and the methods' own random draws (mixing weights, partners) differ. By default every method trains
with the same settings, the first method's training recipe under the options you give, so that only the method
differs, as in the papers' tables; ``method_recipes`` gives each method its own recipe instead.

Everything is checked before the first run (methods and knob values, backbone, seeds, the data and labelled subset
of every seed, the runs already recorded), and the output folder is locked for the comparison, as ``hubtune
finetune`` locks its own (:mod:`hubtune.locking`). Each finished run is appended to the journal ``compare.jsonl``
(:mod:`hubtune.training.compare_journal`: lines written whole, a line cut short by a kill dropped on the next start):
a rerun of the same command skips the finished runs, and an interruption loses at most the run in progress; runs
recorded with other settings (a method's recipe changed since, for example) are refused, not reused. The report (``compare.md``, ``compare.json``
and ``compare_differences.png``) gives accuracy mean ± std, the paired difference to the first method, wins, an exact
sign-flip p-value and the time per optimizer step relative to the first method::

    hubtune compare --dataset ./my_images --model hf-hub:timm/resnet50.a1_in1k --image_size 224 \\
        --methods ce core-tuning adaptivemix --seeds 5 --train_samples_per_class 10
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import statistics
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from transformers import set_seed

from hubtune.backbones import resolve_library
from hubtune.data import collate_image_batch, few_shot_subset, load_image_classification_data
from hubtune.devices import configure_backends
from hubtune.errors import CheckpointError, ConfigError, MethodError, OutputDirError
from hubtune.locking import output_dir_lock
from hubtune.messages import say
from hubtune.methods import get_method
from hubtune.modeling import HubtuneForImageClassification
from hubtune.stats import paired_sign_flip_p
from hubtune.training.compare_args import (
    DEFAULT_OUTPUT_DIR,
    CompareArguments,
    compare_parser,
    parse_compare_args,
    parse_method_label,
)
from hubtune.training.compare_journal import RUNS_FILE, RunJournal, read_runs
from hubtune.training.finetune import (
    FinetuneTrainingArguments,
    _trainer_callbacks,
    method_arguments_class,
    preparation_dataset,
    resolve_recipe,
    stream_schedule,
    training_datasets,
)
from hubtune.training.recipes import SOURCE_RECIPE, settings_to_json
from hubtune.training.trainer import HubtuneTrainer, compute_accuracy

__all__ = ["CompareArguments", "compare_parser", "parse_compare_args", "read_runs", "run_compare", "summarize",
           "DEFAULT_OUTPUT_DIR", "RUNS_FILE"]

# Options that change what is measured: rows of a comparison must agree on them.
_RUN_SCOPED = ("output_dir", "seed", "overwrite_output_dir", "logging_dir", "run_name", "disable_tqdm",
               "logging_steps", "logging_strategy", "report_to", "given_options", "dataloader_num_workers",
               "save_strategy", "eval_strategy", "save_total_limit", "push_to_hub", "hub_token", "hub_model_id")
_LARGEST_SEED = 2**32 - 1  # numpy's and FinetuneTrainingArguments' bound


# ------------------------------------------------------------------------------------------ the plan


@dataclasses.dataclass
class _Comparison:
    """A comparison checked in full before anything is written: its arguments, methods, seeds and, for each entry of
    --methods, the training settings its runs record (JSON form, as in compare.jsonl)."""

    model_args: Any
    data_args: Any
    compare_args: CompareArguments
    training_args: FinetuneTrainingArguments
    labels: list[str]
    seeds: list[int]
    method_args: dict[str, Any]
    recipe_of: str | None
    settings: dict[str, dict[str, Any]]
    fingerprint: str
    earlier_fingerprint: str  # the same comparison as hubtune 0.2.0 journals name it (every option, default or not)

    @property
    def out(self) -> Path:
        return Path(self.training_args.output_dir)

    @property
    def total(self) -> int:
        return len(self.labels) * len(self.seeds)


def _method_arguments(label: str, knobs_args: Any, preset: str) -> Any:
    """A MethodArguments for one entry of --methods: the given knobs it owns, then the entry's own knobs (and its
    ``recipe=``, else --recipe)."""
    name, own = parse_method_label(label)
    method = get_method(name)
    knob_names = set(method.config_class.knob_names())
    shared = {f.name: getattr(knobs_args, f.name) for f in dataclasses.fields(knobs_args)
              if f.name in knob_names and getattr(knobs_args, f.name) is not None}
    preset = preset if preset in method.config_class.PRESETS else "paper"
    own.setdefault("recipe", knobs_args.recipe)
    return method_arguments_class()(method=name, preset=preset, **{**shared, **own})


def _check_knobs_apply(labels: list[str], knobs_args: Any) -> None:
    owned = set()
    for label in labels:
        owned |= set(get_method(parse_method_label(label)[0]).config_class.knob_names())
    for f in dataclasses.fields(knobs_args):
        if f.name not in ("preset", "recipe") and getattr(knobs_args, f.name) is not None and f.name not in owned:
            raise MethodError(f"--{f.name} applies to none of --methods {' '.join(labels)}; remove it.")
    preset = knobs_args.preset
    if preset != "paper" and not any(preset in get_method(parse_method_label(x)[0]).config_class.PRESETS for x in labels):
        raise MethodError(f"--preset {preset} is offered by none of --methods {' '.join(labels)}.")


def _check_backbone_serves(labels: list[str], model_args: Any) -> None:
    """Refuse, before any training, a method that needs the pretrained weights' own head on a random backbone or on
    a backbone whose library does not keep that head."""
    needing = [x for x in labels if get_method(parse_method_label(x)[0]).uses_source_classifier]
    if needing and not model_args.pretrained:
        raise MethodError(
            f"{', '.join(needing)} needs the pretrained weights' own classifier, but --model {model_args.model} is "
            "randomly initialised; pass pretrained weights (e.g. --model local-dir:PATH or hf-hub:timm/NAME) or "
            f"drop {', '.join(needing)} from --methods."
        )
    library = resolve_library(model_args.model) if needing else None
    for label in needing:
        problem = get_method(parse_method_label(label)[0]).backbone_problem(library)
        if problem:
            raise MethodError(problem)


def _seeds(first: int, count: int) -> list[int]:
    last = first + count - 1
    if last > _LARGEST_SEED:
        raise ConfigError(f"--seed {first} with --seeds {count} would train seeds up to {last}, past the largest seed "
                          f"{_LARGEST_SEED}; lower --seed or --seeds.")
    return list(range(first, last + 1))


def _recorded_settings(label: str, method_args: Any, recipe_of: str | None, model_args: Any,
                       training_args: FinetuneTrainingArguments) -> dict[str, Any]:
    """The settings a run of ``label`` records (as :func:`_run_one` resolves them), after building the entry's
    method config as its runs will (so that a bad knob value stops the comparison before its first run)."""
    _, settings, knob_sources = resolve_recipe(method_args, training_args, pretrained=model_args.pretrained,
                                               recipe_method=recipe_of)
    try:
        method_args.to_method_config({k: s.value for k, s in knob_sources.items() if s.source == SOURCE_RECIPE})
    except ConfigError as e:
        raise type(e)(f"--methods {label}: {e}") from None
    return json.loads(json.dumps(settings_to_json({**settings, **knob_sources}), default=str))


def _as_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _options(args: Any, every_option: bool) -> dict[str, Any]:
    """An arguments dataclass's options: every one (as hubtune 0.2.0 fingerprinted them), or those whose values
    differ from their declared defaults."""
    options = {}
    for f in dataclasses.fields(args):
        if not f.init:
            continue
        value, has_default = getattr(args, f.name), not (f.default is f.default_factory is dataclasses.MISSING)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory() if has_default else None
        if every_option or not has_default or _as_json(value) != _as_json(default):
            options[f.name] = value
    return options


def _fingerprint(model_args: Any, data_args: Any, compare_args: Any, recipe: Mapping[str, Any], training_args: Any,
                 every_option: bool = False) -> str:
    """What makes runs comparable: model, data, labelled subset, the first method's resolved recipe settings and the
    other training options. Only options away from their defaults count, so that an option added by a newer hubtune
    or transformers (at a default that trains as before) keeps a journal usable; ``every_option``: the earlier form."""
    training = {k: v for k, v in _options(training_args, every_option).items() if k not in recipe}
    described = {
        "model": _options(model_args, every_option), "data": _options(data_args, every_option),
        "train_samples_per_class": compare_args.train_samples_per_class, "method_recipes": compare_args.method_recipes,
        "settings": {k: v for k, v in {**recipe, **training}.items() if k not in _RUN_SCOPED},
    }
    return hashlib.sha256(_as_json(described).encode()).hexdigest()[:16]


def _plan(model_args: Any, data_args: Any, knobs_args: Any, compare_args: CompareArguments,
          training_args: FinetuneTrainingArguments) -> _Comparison:
    """Everything checked that can be without data: methods, knobs, backbone, seeds (nothing is written)."""
    labels = [m.strip() for m in compare_args.methods]
    _check_knobs_apply(labels, knobs_args)
    _check_backbone_serves(labels, model_args)
    if training_args.push_to_hub:
        raise ConfigError("hubtune compare publishes nothing; drop --push_to_hub (train the chosen method with "
                          "`hubtune finetune --push_to_hub`).")
    seeds = _seeds(training_args.seed, compare_args.seeds)
    method_args = {label: _method_arguments(label, knobs_args, knobs_args.preset) for label in labels}
    recipe_of = None if compare_args.method_recipes else (method_args[labels[0]].recipe or method_args[labels[0]].method)
    settings = {label: _recorded_settings(label, method_args[label], recipe_of, model_args, training_args)
                for label in labels}
    baseline_settings = resolve_recipe(method_args[labels[0]], training_args, pretrained=model_args.pretrained)[1]
    recipe = {k: s.value for k, s in baseline_settings.items()}
    fingerprints = [_fingerprint(model_args, data_args, compare_args, recipe, training_args, every_option=every)
                    for every in (False, True)]
    return _Comparison(model_args, data_args, compare_args, training_args, labels, seeds, method_args, recipe_of,
                       settings, *fingerprints)


# ------------------------------------------------------------------------------------------ the journal


def _difference(recorded: Mapping[str, Any], expected: Mapping[str, Any]) -> str | None:
    """The first training setting in which a recorded run differs from what this comparison would use, in words."""
    def shown(setting: Any) -> str:
        if isinstance(setting, dict) and "value" in setting:
            return f"{setting['value']!r} ({setting.get('source')})"
        return "unset" if setting is None else repr(setting)

    for key in [*expected, *(k for k in recorded if k not in expected)]:
        if key not in _RUN_SCOPED and recorded.get(key) != expected.get(key):
            return f"{key}={shown(recorded.get(key))} where this command would use {shown(expected.get(key))}"
    return None


def _same_comparison(row: Mapping[str, Any], comparison: _Comparison) -> bool:
    """Whether a journal row was trained for this comparison (under either form of its fingerprint)."""
    return row.get("fingerprint") in (comparison.fingerprint, comparison.earlier_fingerprint)


def _finished_runs(journal: RunJournal, comparison: _Comparison) -> set[tuple[str, int]]:
    """The (label, seed) runs already in the journal that this comparison can reuse. Runs of other settings (another
    fingerprint, or a method's settings changed, e.g. its recipe in a newer hubtune) are refused in one line, or set
    aside with --overwrite_output_dir."""
    journal.repair()
    overwrite = comparison.training_args.overwrite_output_dir
    try:
        rows = journal.rows()
    except CheckpointError:
        if not overwrite:
            raise
        return _set_aside(journal)
    stale, detail = [], None
    for number, row in rows:
        expected = comparison.settings.get(row.get("label"))
        difference = _difference(row["settings"], expected) if expected is not None else None
        if not _same_comparison(row, comparison) or difference:
            stale.append(number)
            if difference and detail is None:
                detail = f"line {number}, {row['label']} with seed {row['seed']}: {difference}"
    if stale and not overwrite:
        raise OutputDirError(
            f"{journal.path} holds {len(stale)} run(s) of a comparison with other settings ("
            f"{detail or 'model, data, samples per class or training options'}); choose another --output_dir, or pass "
            "--overwrite_output_dir to set those runs aside and start over."
        )
    if stale:
        return _set_aside(journal)
    return {(row["label"], row["seed"]) for _, row in rows if row["label"] in comparison.labels}


def _set_aside(journal: RunJournal) -> set[tuple[str, int]]:
    """--overwrite_output_dir: the recorded runs move to compare.jsonl.replaced-<time>; nothing is reused."""
    aside = journal.set_aside(f"replaced-{int(time.time())}")
    say(f"The runs recorded before are set aside in {aside}; the comparison starts over.")
    return set()


# ------------------------------------------------------------------------------------------ the runs


def _seed_data(data_args: Any, compare_args: CompareArguments, seed: int) -> Any:
    """The training and evaluation data of one seed (its labelled subset drawn with the seed)."""
    data = load_image_classification_data(
        data_args.dataset, image_column=data_args.image_column, label_column=data_args.label_column,
        eval_split=data_args.eval_split, eval_fraction=data_args.eval_fraction, seed=seed,
        max_train_samples=data_args.max_train_samples, max_eval_samples=data_args.max_eval_samples,
        strict_data=data_args.strict_data, streaming=data_args.streaming,
    )
    if data.streaming and (data.eval is None or compare_args.train_samples_per_class is not None):
        raise ConfigError("hubtune compare --streaming needs the stream's evaluation split (--eval_split) and "
                          "no --train_samples_per_class (which picks images from a data set of known size).")
    if compare_args.train_samples_per_class is not None:
        data.train = few_shot_subset(data.train, compare_args.train_samples_per_class, seed)
    return data


def _run_one(label: str, c: _Comparison, seed: int, data, work_dir: Path) -> dict[str, Any]:
    """One entry of --methods on one seed; ``c.recipe_of``: whose recipe every method trains with (None: each its
    own)."""
    method_args, model_args, data_args, training_args = c.method_args[label], c.model_args, c.data_args, c.training_args
    recipe_of = c.recipe_of
    args, settings, knob_sources = resolve_recipe(method_args, training_args, pretrained=model_args.pretrained,
                                                  recipe_method=recipe_of)
    args = dataclasses.replace(args, seed=seed, output_dir=str(work_dir), save_strategy="no", eval_strategy="no",
                               push_to_hub=False, report_to="none", load_best_model_at_end=False)
    args = stream_schedule(args, data) if data.streaming else args
    method_config = method_args.to_method_config(
        {k: s.value for k, s in knob_sources.items() if s.source == SOURCE_RECIPE})
    set_seed(seed)
    model = HubtuneForImageClassification.from_backbone(
        model_args.model, id2label=data.id2label, pretrained=model_args.pretrained, method=method_args.method,
        method_config=method_config, image_size=model_args.image_size,
    )
    train_dataset, eval_dataset = training_datasets(data, model, data_args, args)
    trainer = HubtuneTrainer(
        model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
        data_collator=collate_image_batch, compute_metrics=compute_accuracy, callbacks=_trainer_callbacks(model),
        dataset_name=data.name, training_settings=settings, knob_sources=knob_sources,
        preparation_dataset=preparation_dataset(data.train, model),
    )
    started = time.perf_counter()
    result = trainer.train()
    train_seconds = time.perf_counter() - started
    metrics = trainer.evaluate()
    steps = max(int(trainer.state.global_step), 1)
    return {
        "label": label, "method": method_args.method, "method_config": model.method.config.to_dict(), "seed": seed,
        "accuracy": float(metrics["eval_accuracy"]), "eval_loss": float(metrics["eval_loss"]),
        "train_loss": float(result.training_loss), "steps": steps, "train_seconds": round(train_seconds, 3),
        "seconds_per_step": train_seconds / steps, "eval_samples": len(data.eval),
        "train_samples": steps * args.per_device_train_batch_size * args.world_size if data.streaming else len(data.train),
        "settings": settings_to_json({**settings, **knob_sources}),
    }


@dataclasses.dataclass
class _Progress:
    """Where a comparison stands, for the advice an interruption (Ctrl-C, SIGTERM) prints."""

    journal: Path
    total: int | None = None
    saved: int | None = None
    running: tuple[str, int] | None = None

    def advice(self) -> str:
        rerun = "rerun the same command to continue (finished runs are not trained again)"
        if self.saved is None:
            return f"no run had started; {rerun}"
        lost = f"the run of {self.running[0]} with seed {self.running[1]} was lost; " if self.running else ""
        return f"{lost}{self.saved} of {self.total} runs are saved in {self.journal}; {rerun}"


def _train_missing(comparison: _Comparison, done: set[tuple[str, int]], journal: RunJournal,
                   progress: _Progress) -> None:
    """Train every run not in ``done``, appending each to the journal as it finishes. The data of every seed is
    loaded (and its labelled subset drawn) first, so that a class too small for --train_samples_per_class stops the
    comparison before its first run."""
    c = comparison
    todo = {seed: [label for label in c.labels if (label, seed) not in done] for seed in c.seeds}
    data = {seed: _seed_data(c.data_args, c.compare_args, seed) for seed, labels in todo.items() if labels}
    configure_backends(c.training_args.tf32)
    say(f"Comparing {', '.join(c.labels)} over seeds {c.seeds[0]}-{c.seeds[-1]}: {progress.saved} of {c.total} runs "
        f"already finished in {c.out}.")
    work_dir = c.out / ".run-in-progress"  # inside the folder the comparison holds locked: no lock of its own
    for seed, labels in todo.items():
        for label in labels:
            progress.running = (label, seed)
            shutil.rmtree(work_dir, ignore_errors=True)
            try:
                row = _run_one(label, c, seed, data[seed], work_dir)
            finally:
                shutil.rmtree(work_dir, ignore_errors=True)
            row.update(fingerprint=c.fingerprint, dataset=data[seed].name, model=c.model_args.model,
                       train_samples_per_class=c.compare_args.train_samples_per_class)
            journal.append(row)
            progress.saved, progress.running = progress.saved + 1, None
            say(f"[{progress.saved}/{c.total}] {label}, seed {seed}: accuracy {100 * row['accuracy']:.2f}% "
                f"({row['seconds_per_step'] * 1000:.0f} ms/step)")


def _report(comparison: _Comparison, journal: RunJournal) -> dict[str, Any]:
    """The report over the journal's runs of this comparison, after checking that it holds every one of them."""
    c = comparison
    rows = [row for _, row in journal.rows() if _same_comparison(row, c) and row["label"] in c.labels
            and row["seed"] in c.seeds]
    missing = {(label, seed) for label in c.labels for seed in c.seeds} - {(r["label"], r["seed"]) for r in rows}
    if missing:
        label, seed = min(missing, key=lambda x: (x[1], c.labels.index(x[0])))
        raise CheckpointError(f"{journal.path} lacks {len(missing)} of the {c.total} runs it should hold now (e.g. "
                              f"{label} with seed {seed}): was it changed during the comparison? Rerun the same command "
                              "to train what is missing.")
    report = summarize(rows, c.labels, c.compare_args, c.model_args, c.data_args)
    write_report(c.out, report)
    return report


def run_compare(model_args: Any, data_args: Any, knobs_args: Any, compare_args: CompareArguments,
                training_args: FinetuneTrainingArguments) -> dict[str, Any]:
    """Train every method on every seed (skipping runs already in the output folder); write and return the report.

    Everything is checked before the first run (methods and knob values, backbone, seeds, the data of every seed and
    its labelled subset, the runs already recorded). The output folder is locked for the comparison
    (``hubtune.locking``), as for ``hubtune finetune``. Ctrl-C or SIGTERM re-raises the interrupt (of the same kind)
    with what is saved and how to continue. Progress and the report go to the run's messages (:mod:`hubtune.messages`).
    """
    progress = _Progress(Path(training_args.output_dir) / RUNS_FILE)
    try:
        comparison = _plan(model_args, data_args, knobs_args, compare_args, training_args)
        with output_dir_lock(comparison.out, "compare"):
            journal = RunJournal(comparison.out)
            done = _finished_runs(journal, comparison)
            progress.total = comparison.total
            progress.saved = len(done & {(label, seed) for label in comparison.labels for seed in comparison.seeds})
            _train_missing(comparison, done, journal, progress)
            report = _report(comparison, journal)
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM from the command line (hubtune.errors.Terminated)
        raise type(e)(progress.advice()) from None
    say(report["markdown"])
    say(f"Report: {comparison.out / 'compare.md'}, {comparison.out / 'compare.json'}, "
        f"{comparison.out / 'compare_differences.png'}")
    return report


# ------------------------------------------------------------------------------------------ the report


def _pct(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.fmean(values):.2f} ± {100 * sd:.2f}"


def summarize(rows: list[dict[str, Any]], labels: list[str], compare_args: Any = None, model_args: Any = None,
              data_args: Any = None) -> dict[str, Any]:
    """The comparison's numbers (``compare.json``) and its Markdown table, from the recorded runs."""
    by_label: dict[str, dict[int, dict[str, Any]]] = {label: {} for label in labels}
    for row in rows:
        by_label.setdefault(row["label"], {})[row["seed"]] = row
    baseline = by_label[labels[0]]
    methods = []
    for label in labels:
        runs = by_label[label]
        seeds = sorted(runs)
        entry: dict[str, Any] = {"label": label, "seeds": seeds, "accuracy": [runs[s]["accuracy"] for s in seeds]}
        if seeds:
            entry["mean"] = statistics.fmean(entry["accuracy"])
            entry["std"] = statistics.stdev(entry["accuracy"]) if len(seeds) > 1 else 0.0
        paired = [s for s in seeds if s in baseline]
        if label != labels[0] and paired:
            diffs = [runs[s]["accuracy"] - baseline[s]["accuracy"] for s in paired]
            entry.update(
                paired_seeds=paired, differences=diffs, delta=statistics.fmean(diffs),
                wins=sum(d > 0 for d in diffs), losses=sum(d < 0 for d in diffs), p=paired_sign_flip_p(diffs),
                time_ratio=statistics.median(runs[s]["seconds_per_step"] / baseline[s]["seconds_per_step"]
                                             for s in paired),
            )
        methods.append(entry)
    first_rows = [r for by in by_label.values() for r in by.values()]
    settings = first_rows[0]["settings"] if first_rows else {}
    per_method_settings = {label: next(iter(by_label[label].values()))["settings"] for label in labels if by_label[label]}
    report = {
        "baseline": labels[0], "methods": methods,
        "method_recipes": bool(getattr(compare_args, "method_recipes", False)),
        "train_samples_per_class": getattr(compare_args, "train_samples_per_class", None),
        "model": getattr(model_args, "model", None), "pretrained": getattr(model_args, "pretrained", None),
        "image_size": getattr(model_args, "image_size", None), "dataset": getattr(data_args, "dataset", None),
        "train_samples": first_rows[0]["train_samples"] if first_rows else None,
        "eval_samples": first_rows[0]["eval_samples"] if first_rows else None,
        "settings": settings if not getattr(compare_args, "method_recipes", False) else per_method_settings,
    }
    report["markdown"] = _markdown(report)
    return report


def _markdown(report: dict[str, Any]) -> str:
    base = report["baseline"]
    lines = [
        f"# hubtune compare: {', '.join(m['label'] for m in report['methods'])}",
        "",
        f"Data: {report['dataset']}, {report['train_samples']} training images"
        + (f" ({report['train_samples_per_class']} per class, drawn with each seed)" if report["train_samples_per_class"] else "")
        + f", {report['eval_samples']} evaluation images. Model: {report['model']}"
        + (" (pretrained)" if report["pretrained"] else " (random initialisation)")
        + (f", {report['image_size']} px." if report["image_size"] else "."),
        "",
        "| method | seeds | accuracy % (mean ± std) | Δ vs " + base + " (points) | wins | paired p | time / step vs "
        + base + " |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in report["methods"]:
        if not m["seeds"]:
            lines.append(f"| {m['label']} | 0 | - | - | - | - | - |")
            continue
        if m["label"] == base:
            lines.append(f"| {m['label']} | {len(m['seeds'])} | {_pct(m['accuracy'])} | - | - | - | 1.00 |")
            continue
        if "delta" not in m:
            lines.append(f"| {m['label']} | {len(m['seeds'])} | {_pct(m['accuracy'])} | - | - | - | - |")
            continue
        p = "-" if m["p"] is None else f"{m['p']:.3f}"
        lines.append(f"| {m['label']} | {len(m['seeds'])} | {_pct(m['accuracy'])} | {100 * m['delta']:+.2f} | "
                     f"{m['wins']}/{len(m['paired_seeds'])} | {p} | {m['time_ratio']:.2f} |")
    lines += ["", "Δ: mean over seeds of (method − " + base + ") in the same seed; wins: seeds in which the method was "
              "more accurate; paired p: exact two-sided sign-flip test of the per-seed differences; time / step: wall "
              "time of the training loop per optimizer step, median of the per-seed ratios (runs are sequential, so "
              "machine load adds noise).", ""]
    if report["method_recipes"]:
        lines.append("Each method trained with its own training recipe (`--method_recipes`):")
        for label, settings in report["settings"].items():
            lines.append(f"- {label}: " + ", ".join(f"{k}={v['value']} ({v['source']})" for k, v in settings.items()))
    else:
        lines += [f"Every method trained with the same settings ({base}'s recipe under the options given):", "",
                  "| setting | value | source |", "|---|---|---|"]
        lines += [f"| {k} | {v['value']} | {v['source']} |" for k, v in report["settings"].items()
                  if k in _SHARED_SHOWN]
    return "\n".join(lines) + "\n"


_SHARED_SHOWN = ("optim", "optim_args", "learning_rate", "lr_scheduler_type", "weight_decay", "warmup_steps",
                 "max_grad_norm", "num_train_epochs", "max_steps", "per_device_train_batch_size",
                 "gradient_accumulation_steps", "bf16")


def write_report(out: Path, report: dict[str, Any]) -> None:
    """compare.md, compare.json and compare_differences.png (per-seed paired differences)."""
    (out / "compare.md").write_text(report["markdown"], encoding="utf-8")
    data = {k: v for k, v in report.items() if k != "markdown"}
    (out / "compare.json").write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    _plot_differences(out / "compare_differences.png", report)


def _plot_differences(path: Path, report: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    others = [m for m in report["methods"] if "differences" in m]
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * max(len(others), 1), 3.6))
    for i, m in enumerate(others):
        diffs = [100 * d for d in m["differences"]]
        offsets = [(j - (len(diffs) - 1) / 2) * 0.25 / max(len(diffs), 1) for j in range(len(diffs))]
        ax.scatter([i + o for o in offsets], diffs, s=18, alpha=0.8)
        ax.hlines(statistics.fmean(diffs), i - 0.3, i + 0.3, color="black")
    ax.axhline(0.0, color="grey", linewidth=0.8, linestyle="--")
    ax.set_xticks(range(len(others)), [m["label"] for m in others], rotation=15)
    ax.set_ylabel(f"accuracy − {report['baseline']} (points)")
    ax.set_title("per-seed paired differences (bar: mean)")
    if not others:
        ax.text(0.5, 0.5, "one method: nothing to compare", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
