"""The method registry: typed configs, knob ownership, and a method registered from outside that trains end to end."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch.nn.functional as F

from hubtune.errors import ConfigError, MethodError
from hubtune.methods import (
    MethodConfig,
    MethodOutput,
    TrainingMethod,
    available_methods,
    create_method,
    get_method,
    register_method,
    unregister_method,
)
from hubtune.methods.adaptive_mix import AdaptiveMixConfig
from hubtune.methods.core_tuning import CoreTuningConfig
from hubtune.training import method_arguments_class, parse_finetune_args, run_finetune


def test_builtin_methods_and_their_typed_configs():
    assert available_methods()[:3] == ("core-tuning", "ce", "adaptivemix")
    method = create_method("core-tuning", {"eta": 0.2, "preset": "reference"})
    assert isinstance(method.config, CoreTuningConfig) and method.config.eta == 0.2
    assert method.model_defaults() == {"classifier_bias": False}
    loss = method.build_loss()
    assert (loss.eta, loss.preset, loss.validate_labels) == (0.2, "reference", False)
    assert set(method.build_training_heads(8)) == {"projector"}
    assert create_method("adaptivemix", {"preset": "reference"}).model_defaults() == {
        "classifier_type": "orthogonal-abs", "normalize_features": True}
    assert create_method("ce").build_loss() is None
    assert create_method("adaptivemix", AdaptiveMixConfig(shrinkage_weight=2.0)).build_loss().weight == 2.0


@pytest.mark.parametrize(
    "name, knobs, error, message",
    [
        ("simclr", {}, MethodError, "Unknown method 'simclr'; choose one of core-tuning, ce, adaptivemix"),
        ("ce", {"eta": 0.1}, MethodError, "eta is not a knob of method 'ce'"),
        ("core-tuning", {"sigma": 0.1}, MethodError, "sigma is not a knob of method 'core-tuning'"),
        ("core-tuning", {"preset": "v2"}, MethodError, "preset must be one of ('paper', 'reference')"),
        ("core-tuning", {"lam_min": 2.0}, ConfigError, "lam_min must lie in [0, 1]"),
        ("adaptivemix", {"distance": "l1"}, ConfigError, "distance must be one of"),
    ],
)
def test_bad_methods_and_knobs_are_clear_errors(name, knobs, error, message):
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        create_method(name, knobs)


def test_command_line_knobs_belong_to_the_chosen_method():
    method_args = parse_finetune_args(["--method", "ce", "--eta", "0.5"])[2]
    with pytest.raises(MethodError, match="--eta does not apply to --method ce"):
        method_args.to_method_config()
    config = parse_finetune_args(["--method", "adaptivemix", "--shrinkage_weight", "2", "--clean_ce", "false"])[2]
    assert config.to_method_config() == AdaptiveMixConfig(shrinkage_weight=2.0, clean_ce=False)


@dataclass
class ToySmoothingConfig(MethodConfig):
    smoothing: float = 0.1

    def validate(self) -> None:
        if not 0 <= self.smoothing < 1:
            raise ConfigError(f"smoothing must lie in [0, 1), got {self.smoothing}.")


class ToySmoothingMethod(TrainingMethod):
    name = "toy-smoothing"
    config_class = ToySmoothingConfig
    title = "Toy label smoothing"
    description = "Cross-entropy with label smoothing, registered by a test."

    def forward_train(self, model, pixel_values, labels):
        features = model.forward_features(pixel_values)
        logits = model.classifier(features)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.config.smoothing)
        plain = F.cross_entropy(logits.float(), labels).detach()
        return MethodOutput(loss=loss, logits=logits, features=features, components={"plain_ce": plain})


@pytest.fixture
def toy_method():
    register_method(ToySmoothingMethod)
    yield ToySmoothingMethod
    unregister_method(ToySmoothingMethod.name)
    assert "toy-smoothing" not in available_methods()


def test_a_method_registered_from_outside_trains_through_finetune_and_appears_in_the_card(toy_method, tmp_path):
    assert get_method("toy-smoothing") is toy_method
    assert "smoothing" in {f for f in method_arguments_class().__dataclass_fields__}
    out = tmp_path / "out"
    args = parse_finetune_args({
        "model": "test_resnet", "method": "toy-smoothing", "smoothing": 0.2, "max_steps": 3, "logging_steps": 1,
        "per_device_train_batch_size": 16, "max_train_samples": 64, "max_eval_samples": 32, "output_dir": str(out),
        "disable_tqdm": True,
    })
    metrics = run_finetune(*args)
    assert 0.0 <= metrics["eval_accuracy"] <= 1.0
    run = json.loads((out / "hubtune_run.json").read_text())
    assert run["method"] == "toy-smoothing" and run["hyperparameters"]["smoothing"] == 0.2
    assert any("plain_ce" in entry for entry in run["log_history"])  # the method's components were logged
    card = (out / "README.md").read_text()
    assert "Toy label smoothing" in card and "Cross-entropy with label smoothing, registered by a test." in card
    with pytest.raises(MethodError, match="--eta does not apply to --method toy-smoothing"):
        parse_finetune_args({"method": "toy-smoothing", "eta": 0.1})[2].to_method_config()
