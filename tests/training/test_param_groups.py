"""Learning rates per model part (``lr_multipliers``) and weight decay on every parameter (``filter_bias_and_bn``):
through Trainer's optimizer hooks, in the recipes of tllib's baselines, and recorded in the printed recipe,
``hubtune_run.json`` and the card."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import TrainingArguments

from hubtune.commands import main
from hubtune.errors import ConfigError
from hubtune.methods import get_method
from hubtune.modeling import HubtuneForImageClassification
from hubtune.training import HubtuneTrainer, parse_finetune_args
from hubtune.training.finetune import FinetuneTrainingArguments, resolve_recipe
from hubtune.training.param_groups import parameter_groups, parse_lr_multipliers


def _model(backbone: str, method: str = "ce", **kw) -> HubtuneForImageClassification:
    torch.manual_seed(0)
    return HubtuneForImageClassification.from_backbone(backbone, num_labels=3, method=method, image_size=32, **kw)


def _args(tmp_path, **kw) -> FinetuneTrainingArguments:
    return FinetuneTrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", optim="sgd",
                                     learning_rate=0.01, max_steps=4, eval_strategy="no", **kw)


def _lr_by_part(optimizer) -> dict[str, set[float]]:
    found: dict[str, set[float]] = {}
    for group in optimizer.param_groups:
        found.setdefault(group["part"], set()).add(group["lr"])
    return found


@pytest.mark.parametrize("text, expected", [
    ("backbone=0.1", {"backbone": 0.1}),
    (" backbone = 0.1 , source_classifier=0.5,", {"backbone": 0.1, "source_classifier": 0.5}),
    (None, {}), ("", {}),
])
def test_lr_multipliers_parse(text, expected):
    assert parse_lr_multipliers(text) == expected


@pytest.mark.parametrize("text, message", [
    ("backbone", "is not PART=NUMBER"), ("backbone=0", "must be a number > 0"), ("backbone=nan", "must be a number > 0"),
    ("backbone=abc", "must be a number > 0"), ("=0.1", "is not PART=NUMBER"),
])
def test_a_malformed_lr_multiplier_is_one_clear_error(text, message, tmp_path, capsys):
    with pytest.raises(ConfigError, match=message):
        parse_lr_multipliers(text)
    code = main(["finetune", "--lr_multipliers", text, "--output_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code != 0 and message in err and "Traceback" not in err and not (tmp_path / "out").exists()


def test_the_trainer_trains_each_part_at_its_multiplier_through_the_cosine_schedule(tmp_path):
    model = _model("test_resnet", "core-tuning")
    trainer = HubtuneTrainer(model=model, args=_args(tmp_path, lr_multipliers="backbone=0.1,projector=0.5"))
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    assert _lr_by_part(trainer.optimizer) == {"backbone": {0.001}, "classifier": {0.01}, "projector": {0.005}}
    for _ in range(3):
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
    lr = {g["part"]: g["lr"] for g in trainer.optimizer.param_groups}
    assert lr["backbone"] == pytest.approx(0.1 * lr["classifier"]) and lr["classifier"] < 0.01
    # each trainable parameter is in exactly one group
    grouped = [id(p) for g in trainer.optimizer.param_groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters() if p.requires_grad)


def test_a_methods_pretrained_parts_follow_the_backbones_multiplier(timm_weights_with_head, tmp_path):
    model = HubtuneForImageClassification.from_backbone(timm_weights_with_head, num_labels=3, method="co-tuning",
                                                        pretrained=True, image_size=32)
    trainer = HubtuneTrainer(model=model, args=_args(tmp_path, lr_multipliers="backbone=0.1"))
    trainer.create_optimizer()
    assert _lr_by_part(trainer.optimizer) == {"backbone": {0.001}, "source_classifier": {0.001}, "classifier": {0.01}}
    described = {g["part"]: g for g in trainer.parameter_groups()}
    assert described["source_classifier"]["lr_multiplier"] == 0.1
    assert described["classifier"]["parameters"] == sum(p.numel() for p in model.classifier.parameters())


def test_a_given_part_the_model_lacks_is_refused_naming_the_parts(tmp_path):
    trainer = HubtuneTrainer(model=_model("test_resnet"), args=_args(tmp_path, lr_multipliers="encoder=0.1"))
    with pytest.raises(ConfigError, match="names encoder, but this model has no trainable part.*backbone, classifier"):
        trainer.create_optimizer()


def test_a_borrowed_recipe_may_name_parts_this_model_lacks(tmp_path):
    # `--method ce --recipe core-tuning`-like borrowing: a recipe's part that this model lacks is not an error
    args = _args(tmp_path, lr_multipliers="backbone=0.1,projector=0.5")
    model_args, _, method_args, _ = parse_finetune_args(["--method", "ce"])
    _, settings, _ = resolve_recipe(method_args, args)
    from hubtune.training.recipes import Setting

    settings["lr_multipliers"] = Setting("backbone=0.1,projector=0.5", "recipe", "core-tuning")
    trainer = HubtuneTrainer(model=_model("test_resnet"), args=args, training_settings=settings)
    trainer.create_optimizer()
    assert _lr_by_part(trainer.optimizer) == {"backbone": {0.001}, "classifier": {0.01}}


@pytest.mark.parametrize("filter_bias_and_bn", [True, False])
def test_filter_bias_and_bn_decides_whether_biases_and_norms_decay(filter_bias_and_bn, tmp_path):
    model = _model("test_resnet")
    trainer = HubtuneTrainer(model=model, args=_args(tmp_path, weight_decay=5e-4, filter_bias_and_bn=filter_bias_and_bn))
    trainer.create_optimizer()
    decayed = {id(p) for g in trainer.optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    one_dim = [p for p in model.parameters() if p.ndim == 1]
    assert one_dim and all((id(p) in decayed) is (not filter_bias_and_bn) for p in one_dim)
    assert all(id(p) in decayed for p in model.parameters() if p.ndim > 1)


def test_the_methods_own_penalty_still_replaces_weight_decay_on_every_parameter(timm_weights_with_head, tmp_path):
    model = HubtuneForImageClassification.from_backbone(timm_weights_with_head, num_labels=3, method="l2-sp",
                                                        pretrained=True, image_size=32)
    trainer = HubtuneTrainer(model=model, args=_args(tmp_path, weight_decay=5e-4, filter_bias_and_bn=False))
    trainer.create_optimizer()
    decayed = [p for g in trainer.optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]]
    assert decayed == [] and sum(len(g["params"]) for g in trainer.optimizer.param_groups) > 0


def test_parameter_groups_for_a_hand_written_loop_match_the_trainers(tmp_path):
    model = _model("test_resnet")
    decay = [n for n, p in model.named_parameters() if p.ndim > 1]
    groups = parameter_groups(model, 0.01, 1e-4, decay, {"backbone": 0.1})
    optimizer = torch.optim.SGD(groups, lr=0.01)
    assert _lr_by_part(optimizer) == {"backbone": {0.001}, "classifier": {0.01}}
    assert {g["weight_decay"] for g in groups} == {0.0, 1e-4}


def test_tllibs_baselines_train_the_backbone_at_a_tenth_and_decay_every_parameter():
    for name in ("l2-sp", "bss", "delta", "co-tuning"):
        recipe = get_method(name).recipe
        assert recipe["learning_rate"] == 0.01 and recipe["optim_args"] == "momentum=0.9,nesterov=True"
        assert parse_lr_multipliers(recipe["lr_multipliers"])["backbone"] == 0.1, name
        assert "tllib" in get_method(name).recipe_source or "Transfer-Learning-Library" in get_method(name).recipe_source
    assert get_method("bss").recipe["weight_decay"] == get_method("co-tuning").recipe["weight_decay"] == 5e-4
    assert get_method("bss").recipe["filter_bias_and_bn"] is False
    assert get_method("l2-sp").recipe["weight_decay"] == get_method("delta").recipe["weight_decay"] == 0.0
    assert get_method("co-tuning").pretrained_parts == ("source_classifier",)  # so backbone=0.1 reaches its head
    for name in ("ce", "core-tuning", "adaptivemix"):  # Core-tuning's script: one rate for every parameter
        assert "lr_multipliers" not in get_method(name).recipe


def test_another_methods_recipe_trains_ce_as_tllib_does():
    _, _, method_args, training_args = parse_finetune_args(["--model", "local-dir:/nowhere", "--method", "ce",
                                                            "--recipe", "bss"])
    args, settings, _ = resolve_recipe(method_args, training_args)
    assert (args.lr_multipliers, args.weight_decay, args.filter_bias_and_bn) == ("backbone=0.1", 5e-4, False)
    assert settings["lr_multipliers"].describe() == "recipe of bss"
    with pytest.raises(Exception, match="no-such-method"):
        parse_finetune_args(["--method", "ce", "--recipe", "no-such-method"])


def test_plain_training_arguments_are_warned_about_a_recipes_multipliers(timm_weights_with_head, tmp_path):
    model = HubtuneForImageClassification.from_backbone(timm_weights_with_head, num_labels=3, method="co-tuning",
                                                        pretrained=True, image_size=32)
    with pytest.warns(UserWarning, match=r"lr_multipliers=None \(the recipe uses 'backbone=0.1'\)"):
        HubtuneTrainer(model=model, args=TrainingArguments(str(tmp_path), report_to=[], use_cpu=True))
