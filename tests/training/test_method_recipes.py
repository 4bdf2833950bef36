"""Training recipes owned by methods: precedence (given > recipe > hubtune default), sources in the run files and
the card, the Trainer's warning for plain TrainingArguments, and a toy method whose recipe needs no other edit."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass

import pytest
import timm
import yaml
from transformers import TrainingArguments

from hubtune.errors import MethodError
from hubtune.methods import MethodConfig, TrainingMethod, get_method, register_method, unregister_method
from hubtune.modeling import HubtuneForImageClassification
from hubtune.training import HubtuneTrainer, parse_finetune_args, run_finetune
from hubtune.training.finetune import resolve_recipe
from hubtune.training.recipes import recipe_conflicts


@dataclass
class ToyRecipeConfig(MethodConfig):
    strength: float = 1.0
    other: int = 7


class ToyRecipeMethod(TrainingMethod):
    name = "toy-recipe"
    config_class = ToyRecipeConfig
    title = "Toy method with a recipe"
    recipe = {"optim": "sgd", "optim_args": "momentum=0.5", "learning_rate": 0.02, "max_grad_norm": 0.5,
              "lr_scheduler_type": "constant", "strength": 3.0}
    recipe_source = "a test"


@pytest.fixture
def toy():
    register_method(ToyRecipeMethod)
    yield ToyRecipeMethod
    unregister_method(ToyRecipeMethod.name)


def _resolved(source, pretrained=True):
    model_args, _, method_args, training_args = parse_finetune_args(source)
    args, settings, knobs = resolve_recipe(method_args, training_args, pretrained=pretrained)
    config = method_args.to_method_config({k: s.value for k, s in knobs.items() if s.source == "recipe"})
    return args, {k: s.describe() for k, s in {**settings, **knobs}.items()}, config


def test_the_recipe_fills_what_the_user_did_not_give(toy):
    args, sources, config = _resolved(["--method", "toy-recipe"])
    assert (args.learning_rate, args.max_grad_norm, str(args.optim.value), args.optim_args) == (0.02, 0.5, "sgd", "momentum=0.5")
    assert str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)) == "constant"
    assert config.strength == 3.0 and config.other == 7
    assert sources["learning_rate"] == sources["strength"] == "recipe of toy-recipe"
    assert sources["weight_decay"] == sources["other"] == "default"  # not in the recipe: hubtune's default
    assert args.weight_decay == 1e-4


@pytest.mark.parametrize("how", ["flag", "yaml", "dict"])
def test_a_given_value_wins_even_when_it_equals_the_general_default(toy, tmp_path, how):
    values = {"method": "toy-recipe", "max_grad_norm": 1.0, "strength": 2.0}
    if how == "flag":
        source = ["--method", "toy-recipe", "--max_grad_norm", "1.0", "--strength", "2"]
    elif how == "yaml":
        source = tmp_path / "run.yaml"
        source.write_text(yaml.safe_dump(values))
    else:
        source = values
    args, sources, config = _resolved(source)
    assert args.max_grad_norm == 1.0 and sources["max_grad_norm"] == "given"  # 1.0 is also transformers' default
    assert config.strength == 2.0 and sources["strength"] == "given"
    assert args.learning_rate == 0.02 and sources["learning_rate"] == "recipe of toy-recipe"


def test_flags_override_a_config_file_and_both_count_as_given(toy, tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"method": "toy-recipe", "learning_rate": 0.5}))
    args, sources, _ = _resolved([str(path), "--max_grad_norm", "2"])
    assert (args.learning_rate, args.max_grad_norm) == (0.5, 2.0)
    assert sources["learning_rate"] == sources["max_grad_norm"] == "given"


def test_another_optimiser_drops_the_recipes_learning_rate_and_optimiser_arguments(toy):
    args, sources, _ = _resolved(["--method", "toy-recipe", "--optim", "adamw_torch"])
    assert str(args.optim.value) == "adamw_torch" and args.optim_args is None and args.learning_rate == 1e-3
    assert sources["learning_rate"] == sources["optim_args"] == "default"
    assert args.max_grad_norm == 0.5  # the rest of the recipe still applies


def test_random_weights_train_with_the_general_defaults(toy):
    args, sources, config = _resolved(["--method", "toy-recipe"], pretrained=False)
    assert (args.learning_rate, args.max_grad_norm, str(args.optim.value)) == (1e-3, 1.0, "adamw_torch")
    assert config.strength == 1.0 and "recipe of toy-recipe" not in sources.values()


def test_arguments_built_in_python_count_values_off_the_default_as_given(toy):
    model_args, data_args, method_args, training_args = parse_finetune_args({"method": "toy-recipe"})
    training_args.given_options = None  # as if the dataclass had been built by hand
    training_args.max_grad_norm = 3.0
    args, settings, _ = resolve_recipe(method_args, training_args)
    assert args.max_grad_norm == 3.0 and settings["max_grad_norm"].source == "given"
    assert args.learning_rate == 0.02 and settings["learning_rate"].source == "recipe"


def test_builtin_methods_carry_the_papers_unclipped_sgd_recipe():
    for name in ("ce", "core-tuning", "adaptivemix"):
        method = get_method(name)
        assert method.recipe["optim"] == "sgd" and method.recipe["learning_rate"] == 0.01 and method.recipe_source
    assert get_method("ce").recipe["max_grad_norm"] == get_method("core-tuning").recipe["max_grad_norm"] == 0.0
    assert get_method("adaptivemix").recipe["max_grad_norm"] == 1.0  # it diverged unclipped (README, Evidence)
    args, sources, _ = _resolved(["--model", "local-dir:/nowhere"])  # a weights folder: pretrained by default
    assert (args.max_grad_norm, args.learning_rate, args.optim_args) == (0.0, 0.01, "momentum=0.9,nesterov=True")


def test_a_recipe_entry_that_is_neither_an_option_nor_a_knob_is_refused(toy, monkeypatch):
    monkeypatch.setattr(ToyRecipeMethod, "recipe", {"learning_rat": 0.1})
    with pytest.raises(MethodError, match="sets 'learning_rat', which is neither a TrainingArguments option nor"):
        _resolved(["--method", "toy-recipe"])


def _pretrained_model(method: str) -> HubtuneForImageClassification:
    model = HubtuneForImageClassification.from_backbone("test_resnet", num_labels=3, method=method, image_size=32)
    model.config.backbone_spec["pretrained"] = True
    return model


def test_the_trainer_warns_once_about_plain_arguments_that_contradict_the_recipe(tmp_path):
    args = TrainingArguments(str(tmp_path), report_to=[], use_cpu=True)
    with pytest.warns(UserWarning) as caught:
        HubtuneTrainer(model=_pretrained_model("core-tuning"), args=args)
    messages = [str(w.message) for w in caught if "training recipe" in str(w.message)]
    assert len(messages) == 1
    assert "max_grad_norm=1.0 (the recipe uses 0.0)" in messages[0] and "'core-tuning'" in messages[0]
    assert "learning_rate=5e-05 (the recipe uses 0.01)" in messages[0]
    fixed = TrainingArguments(str(tmp_path), report_to=[], use_cpu=True, max_grad_norm=0.0, learning_rate=0.01,
                              optim="sgd", optim_args="momentum=0.9,nesterov=True", lr_scheduler_type="cosine",
                              weight_decay=1e-4)
    assert recipe_conflicts(get_method("core-tuning")(), fixed) == {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        HubtuneTrainer(model=_pretrained_model("core-tuning"), args=fixed)


def test_finetune_prints_records_and_cards_each_source(toy, tmp_path, capsys):
    weights = tmp_path / "weights"
    timm.models.save_for_hf(timm.create_model("test_resnet", num_classes=0), str(weights), safe_serialization=True)
    out = tmp_path / "out"
    run_finetune(*parse_finetune_args([
        "--model", f"local-dir:{weights}", "--method", "toy-recipe", "--max_steps", "2", "--max_train_samples", "32",
        "--max_eval_samples", "16", "--per_device_train_batch_size", "16", "--image_size", "32",
        "--weight_decay", "0.001", "--output_dir", str(out), "--disable_tqdm", "true",
    ]))
    printed = capsys.readouterr().out
    assert "Training recipe of toy-recipe: optim=sgd, optim_args=momentum=0.5, learning_rate=0.02" in printed
    run = json.loads((out / "hubtune_run.json").read_text())
    settings = run["training_settings"]
    assert settings["learning_rate"] == {"value": 0.02, "source": "recipe of toy-recipe"}
    assert settings["weight_decay"] == {"value": 0.001, "source": "given"}
    assert settings["strength"] == {"value": 3.0, "source": "recipe of toy-recipe"}
    assert settings["gradient_accumulation_steps"]["source"] == "default"
    trained = json.loads((out / "checkpoint-2" / "training_args.json").read_text())
    assert trained["max_grad_norm"] == 0.5 and trained["learning_rate"] == 0.02
    card = (out / "README.md").read_text()
    assert "| Hyper-parameter | Value | Source |" in card
    assert "| learning_rate | 0.02 | recipe of toy-recipe |" in card and "| weight_decay | 0.001 | given |" in card
