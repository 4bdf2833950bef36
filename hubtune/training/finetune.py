"""The main job: fine-tune a timm / transformers backbone on an image-classification dataset.

Arguments come as dataclasses, as in Hugging Face's example scripts: :class:`ModelArguments`,
:class:`DataArguments`, the method's arguments (:func:`method_arguments_class`, one flag per knob of every
registered method) and :class:`FinetuneTrainingArguments` (``transformers.TrainingArguments`` with hubtune's
defaults), so every ``TrainingArguments`` option is reachable; they live in :mod:`hubtune.training.finetune_args`
(light to import: ``--help`` and argument errors need no model, data or Trainer code) and are re-exported here. :func:`parse_finetune_args` builds them from
command-line strings, a YAML / JSON file or a dict; :func:`run_finetune` runs the job::

    from hubtune.training import parse_finetune_args, run_finetune

    metrics = run_finetune(*parse_finetune_args({"model": "resnet18", "method": "ce", "num_train_epochs": 2}))

The output folder holds the model in its backbone library's layout, ``README.md`` (model card),
``all_results.json`` (as the HF examples write it), ``hubtune_run.json`` and ``checkpoint-*`` folders for
``resume_from_checkpoint``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from transformers import set_seed

from hubtune.data import build_transforms, collate_image_batch, load_image_classification_data, with_transforms
from hubtune.errors import ConfigError
from hubtune.hub import write_model_card, write_run_info
from hubtune.hub.examples import write_demo_examples
from hubtune.layouts import LIBRARY_LAYOUTS, detect_layout, get_layout
from hubtune.messages import say
from hubtune.methods import get_method
from hubtune.modeling import HubtuneForImageClassification
from hubtune.devices import configure_backends
from hubtune.training.callbacks import LossWeightWarmupCallback
from hubtune.training.finetune_args import (
    HUB_SPACE_NEEDS,
    DataArguments,
    FinetuneTrainingArguments,
    ModelArguments,
    finetune_parser,
    method_arguments_class,
    parse_finetune_args,
)
from hubtune.training.param_groups import summarize_parameter_groups
from hubtune.training.recipes import (
    SOURCE_RECIPE,
    apply_settings,
    describe_settings,
    resolve_knobs,
    resolve_training_settings,
)
from hubtune.runs.checkpoints import resume_request
from hubtune.runs.folder import guarded_output_dir
from hubtune.runs.interrupt import resumable_on_interrupt
from hubtune.runs.publish import publish, published_line
from hubtune.training.trainer import HubtuneTrainer, compute_accuracy

__all__ = [
    "ModelArguments",
    "DataArguments",
    "FinetuneTrainingArguments",
    "method_arguments_class",
    "finetune_parser",
    "parse_finetune_args",
    "run_finetune",
    "next_steps",
]

# Files that show a folder holds another run's results (an empty or unrelated folder is fine to write into).
_RUN_FILES = ("config.json", "model.safetensors", "hubtune_run.json", "all_results.json", "trainer_state.json")


# ------------------------------------------------------------------------------------------ the job


def _avoid_a_last_batch_of_one(args: FinetuneTrainingArguments, num_train: int) -> None:
    """A last batch of one image breaks BatchNorm in training mode: drop it (and say so) when it would occur."""
    global_batch = args.per_device_train_batch_size * max(args.world_size, 1)
    if num_train % global_batch == 1 and not args.dataloader_drop_last:
        args.dataloader_drop_last = True
        say(f"Note: {num_train} training images leave a last batch of one ({num_train} = k x {global_batch} + 1); it "
              "is dropped each epoch (dataloader_drop_last=True), as BatchNorm cannot train on one image.")


def preparation_dataset(train: Any, model: HubtuneForImageClassification) -> Any:
    """The training images under the evaluation transform, for a method that prepares on them (Co-Tuning, DELTA);
    None for the others."""
    if not model.method.needs_preparation():
        return None
    return with_transforms(train, build_transforms(model.preprocessing, train=False))


def _trainer_callbacks(model: HubtuneForImageClassification) -> list:
    ratio = model.method.warmup_ratio()
    if ratio > 0:
        return [LossWeightWarmupCallback(model.method.weight_attribute, warmup_ratio=ratio)]
    return []


def run_finetune(
    model_args: ModelArguments,
    data_args: DataArguments,
    method_args: Any,
    training_args: FinetuneTrainingArguments,
) -> dict[str, float]:
    """Fine-tune, evaluate, save a Hub-ready folder (and push it when asked); returns the final metrics.

    The method's training recipe fills the training arguments the user did not set (``training_args.given_options``,
    recorded by :func:`parse_finetune_args`; for arguments built in Python, those still at hubtune's defaults).
    The output folder is guarded and locked for the run (:func:`hubtune.runs.folder.guarded_output_dir`): a second
    run into it is refused, and so is a folder holding another run's results unless the run resumes or overwrites.
    Notes and the summary go to the ``hubtune.run`` logger (:mod:`hubtune.messages`).
    """
    resume = resume_request(training_args.resume_from_checkpoint)
    with guarded_output_dir(training_args.output_dir, "finetune", resume=resume,
                            overwrite=training_args.overwrite_output_dir, run_files=_RUN_FILES,
                            main_process=training_args.process_index == 0):
        return _run_finetune(model_args, data_args, method_args, training_args, resume)


def _run_finetune(model_args: ModelArguments, data_args: DataArguments, method_args: Any,
                  training_args: FinetuneTrainingArguments, resume: str | None) -> dict[str, float]:
    training_args, settings, knob_sources = resolve_recipe(method_args, training_args, pretrained=model_args.pretrained)
    method_config = method_args.to_method_config({k: s.value for k, s in knob_sources.items() if s.source == SOURCE_RECIPE})
    set_seed(training_args.seed)
    configure_backends(training_args.tf32)
    started = time.perf_counter()
    data = load_image_classification_data(
        data_args.dataset, image_column=data_args.image_column, label_column=data_args.label_column,
        eval_split=data_args.eval_split, eval_fraction=data_args.eval_fraction, seed=training_args.seed,
        max_train_samples=data_args.max_train_samples, max_eval_samples=data_args.max_eval_samples,
        strict_data=data_args.strict_data,
    )
    model = HubtuneForImageClassification.from_backbone(
        model_args.model, id2label=data.id2label, pretrained=model_args.pretrained, method=method_args.method,
        method_config=method_config, image_size=model_args.image_size,
    )
    _avoid_a_last_batch_of_one(training_args, len(data.train))
    train_ds = with_transforms(data.train, build_transforms(model.preprocessing, train=True))
    eval_ds = with_transforms(data.eval, build_transforms(model.preprocessing, train=False))
    trainer = HubtuneTrainer(
        model=model, args=_trainer_args(training_args), train_dataset=train_ds, eval_dataset=eval_ds,
        data_collator=collate_image_batch, compute_metrics=compute_accuracy, callbacks=_trainer_callbacks(model),
        dataset_name=data.name, export_format=model_args.export_format, training_settings=settings,
        knob_sources=knob_sources, preparation_dataset=preparation_dataset(data.train, model),
    )
    say(recipe_summary(method_args.method, {**settings, **knob_sources}, pretrained=model_args.pretrained,
                       parameter_groups=trainer.parameter_groups()))
    if not model_args.pretrained:
        say(f"Note: backbone {model_args.model!r} starts from random weights (pass --pretrained to load pretrained "
            "weights).")
    with resumable_on_interrupt(training_args.output_dir):  # Ctrl-C / SIGTERM name the last complete checkpoint
        train_result = trainer.train(resume_from_checkpoint=resume)
    repo_id = training_args.hub_model_id if training_args.push_to_hub else None
    metrics = _save_results(trainer, train_result, len(train_ds), len(eval_ds), repo_id)
    if trainer.is_world_process_zero():
        out = Path(training_args.output_dir)
        write_demo_examples(out, data.eval, data.id2label, model.preprocessing)  # before any push: they go along
        say(f"{method_args.method} on {data.name} with {model_args.model}: "
            f"eval_accuracy={metrics.get('eval_accuracy', float('nan')):.4f} in {time.perf_counter() - started:.1f} s; "
            f"model, card and metrics in {out.resolve()}")
        if repo_id:
            say(published_line(*publish(out, repo_id, training_args.hub_space, token=training_args.hub_token,
                                        private=training_args.hub_private_repo, revision=training_args.hub_revision)))
        say(next_steps(out, repo_id))
    return metrics


def next_steps(folder: str | Path, repo_id: str | None = None) -> str:
    """What to do next, one line each: try the model in the demo page, publish it (unless it was pushed to
    ``repo_id``) with its demo Space, and load it."""
    folder = Path(folder).resolve()
    layout = detect_layout(folder)
    repo = repo_id or "ORG/NAME"
    hint = get_layout(layout).load_hint(repo, folder) if layout in LIBRARY_LAYOUTS else None
    load = hint or f'HubtuneForImageClassification.from_pretrained("{repo}"); locally from_pretrained("{folder}")'
    lines = [f"Next: try it in your browser: `hubtune demo {folder}` (needs `pip install 'hubtune[demo]'`)"]
    if not repo_id:
        lines.append(f"      publish it with a demo Space: `hubtune push {folder} ORG/NAME --space NAME` (or add "
                     "`--push_to_hub --hub_model_id ORG/NAME --hub_space NAME` to the training command)")
    lines.append(f"      load it with {load}")
    return "\n".join(lines)


def resolve_recipe(method_args: Any, training_args: FinetuneTrainingArguments, pretrained: bool = True,
                   recipe_method: str | None = None):
    """(training arguments with the recipe applied, their settings and sources, the knobs' sources).

    A method's recipe is a fine-tuning recipe: it applies to pretrained backbones only (a randomly initialised one
    trains with hubtune's general defaults). The training settings come from the recipe of ``recipe_method`` when
    given (``hubtune compare`` trains every method with the first one's), else of ``method_args.recipe`` (``--recipe
    NAME``), else of the method itself; the knobs always come from the method's own recipe.
    """
    method = get_method(method_args.method)
    recipe_of = recipe_method or getattr(method_args, "recipe", None) or method_args.method
    settings = resolve_training_settings(get_method(recipe_of), training_args, training_args.given_options,
                                         use_recipe=pretrained)
    _, knob_sources = resolve_knobs(method, method_args.given_knobs(), use_recipe=pretrained)
    return apply_settings(training_args, settings), settings, knob_sources


def recipe_summary(method_name: str, settings: Mapping[str, Any], pretrained: bool = True,
                   parameter_groups: list[dict[str, Any]] | None = None) -> str:
    """One line: which values came from which recipe (and that given options win); a second one with each model
    part's learning rate when they differ."""
    groups = ""
    if parameter_groups and len({g["learning_rate"] for g in parameter_groups}) > 1:
        groups = "\nLearning rate per part: " + summarize_parameter_groups(parameter_groups) + "."
    return _recipe_line(method_name, settings, pretrained) + groups


def _recipe_line(method_name: str, settings: Mapping[str, Any], pretrained: bool) -> str:
    from_recipe = describe_settings(settings)
    if not pretrained and get_method(method_name).recipe:
        return (f"Training from random weights: the fine-tuning recipe of {method_name} does not apply, hubtune's "
                "general defaults do (AdamW, learning rate 1e-3, cosine, clipping at 1.0) unless you give options.")
    if not from_recipe:
        return f"Training settings: no recipe value used for {method_name} (see hubtune_run.json for each source)."
    owners = sorted({s.recipe_of for s in settings.values() if s.source == SOURCE_RECIPE})
    return (f"Training recipe of {', '.join(owners)}: {from_recipe} (options you give override it; each value's "
            "source is in hubtune_run.json and the model card).")


def _trainer_args(args: FinetuneTrainingArguments) -> FinetuneTrainingArguments:
    """The arguments the Trainer sees: the final folder is pushed once, with its card, after training (one
    commit, errors in words), unless a hub_strategy that pushes checkpoints asks the Trainer to push too."""
    if args.push_to_hub and args.hub_model_id is None:
        raise ConfigError("--push_to_hub needs --hub_model_id ORG/NAME (the Hub repository to publish to).")
    if args.hub_space and not args.push_to_hub:
        raise ConfigError(HUB_SPACE_NEEDS)
    strategy = str(getattr(args.hub_strategy, "value", args.hub_strategy))
    if not args.push_to_hub or strategy in ("checkpoint", "all_checkpoints"):
        return args
    return dataclasses.replace(args, push_to_hub=False)


def _save_results(trainer: HubtuneTrainer, train_result, num_train: int, num_eval: int,
                  repo_id: str | None) -> dict[str, float]:
    metrics = dict(train_result.metrics)
    eval_metrics = trainer.evaluate()
    metrics.update(eval_metrics)
    metrics["eval_samples"] = num_eval
    metrics["train_samples"] = num_train
    trainer.save_model()
    trainer.log_metrics("train", train_result.metrics)
    trainer.log_metrics("eval", eval_metrics)
    trainer.save_metrics("train", train_result.metrics)
    trainer.save_metrics("eval", eval_metrics)
    trainer.save_metrics("all", metrics)
    trainer.save_state()
    if trainer.is_world_process_zero():
        out = trainer.args.output_dir
        run_info = trainer.run_info(metrics={k: v for k, v in metrics.items() if k.startswith("eval_")})
        write_run_info(out, run_info)
        write_model_card(out, run_info, repo_id=repo_id)
    return metrics
