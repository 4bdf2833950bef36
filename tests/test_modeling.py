"""HubtuneForImageClassification: losses by mode, labels, save/load in the hubtune layout, bad input."""

import pytest
import torch
import torch.nn.functional as F

from hubtune.errors import ConfigError, ExportError, MethodError, PickleCheckpointError, WeightsFileError
from hubtune.losses.core_tuning import CoreTuningLoss
from hubtune.modeling import HubtuneConfig, HubtuneForImageClassification

ID2LABEL = {0: "cat", 1: "dog", 2: "fox"}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return HubtuneForImageClassification.from_backbone("resnet18", id2label=ID2LABEL, image_size=32)


def test_labels_and_heads_come_from_the_arguments(model):
    assert model.config.num_labels == 3
    assert model.config.id2label == ID2LABEL and model.config.label2id == {"cat": 0, "dog": 1, "fox": 2}
    assert model.classifier.out_features == 3
    # training-only heads are submodules, so Trainer's optimizer sees them
    names = {n for n, _ in model.named_parameters()}
    assert any(n.startswith("projector.") for n in names) and any(n.startswith("classifier.") for n in names)


def test_training_mode_returns_the_core_tuning_loss_and_eval_mode_plain_ce(model):
    x, y = torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 0, 1, 2])
    model.train()
    torch.manual_seed(1)
    draws = model.loss_fn.sample_draws(6)
    features = model.forward_features(x)
    expected = model.loss_fn(features, y, model.classifier, model.projector, draws=draws)
    torch.manual_seed(1)
    out = model(x, labels=y)
    assert isinstance(model.loss_fn, CoreTuningLoss)
    torch.testing.assert_close(out.loss, expected.loss)
    assert set(out.loss_components) == {"ce_loss", "contrastive_loss", "num_positive_pairs"}
    assert out.logits.shape == (6, 3)

    model.eval()
    with torch.no_grad():
        out = model(x, labels=y)
        logits = model.classifier(model.backbone(x))
    torch.testing.assert_close(out.loss, F.cross_entropy(logits, y))
    assert out.loss_components is None


def test_ce_method_has_no_projector_and_trains_with_cross_entropy():
    net = HubtuneForImageClassification.from_backbone("resnet18", num_labels=4, method="ce", image_size=32)
    assert not hasattr(net, "projector") and net.loss_fn is None
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    net.train()
    out = net(x, labels=y)
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits, y))


def test_batch_of_one_and_single_sample_classes_give_a_finite_loss(model):
    model.train()
    for y in (torch.tensor([2]), torch.tensor([0, 1, 2])):
        # 64 px: BatchNorm needs more than one value per channel, which a 1x1 map of one image lacks
        out = model(torch.randn(len(y), 3, 64, 64), labels=y)
        assert torch.isfinite(out.loss)
        out.loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        model.zero_grad()


def test_labels_outside_range_are_a_clear_error(model):
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        model(torch.randn(2, 3, 32, 32), labels=torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        model(torch.randn(2, 3, 32, 32), labels=torch.tensor([-1, 0]))


def test_bf16_autocast_gives_a_float32_finite_loss(model):
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(8, 3, 32, 32), labels=torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]))
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    out.loss.backward()
    model.zero_grad()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"method": "simclr"}, "Unknown method 'simclr'; choose one of core-tuning, ce, adaptivemix"),
        ({"method_config": {"preset": "v2"}}, "preset must be one of"),
        ({"method_config": {"eta": -1.0}}, "eta"),
        ({"method_config": {"temperature": 0.0}}, "temperature"),
        ({"method": "ce", "method_config": {"eta": 0.5}}, "eta is not a knob of method 'ce'"),
        ({"method": "adaptivemix", "method_config": {"eta_warmup_ratio": 0.1}}, "not a knob of method 'adaptivemix'"),
    ],
)
def test_bad_configuration_is_a_clear_error(kwargs, message):
    with pytest.raises(MethodError if "method" in kwargs else ValueError, match=message):
        HubtuneForImageClassification.from_backbone("resnet18", num_labels=2, **kwargs)


def test_num_labels_and_id2label_must_agree():
    with pytest.raises(ValueError, match="id2label has 3 names"):
        HubtuneForImageClassification.from_backbone("resnet18", num_labels=2, id2label=ID2LABEL)


def test_hubtune_layout_round_trip_keeps_the_projector(model, tmp_path):
    model.save_pretrained(tmp_path, export_format="hubtune")
    assert (tmp_path / "model.safetensors").is_file() and not list(tmp_path.glob("*.bin"))
    loaded = HubtuneForImageClassification.from_pretrained(tmp_path)
    assert isinstance(loaded.config, HubtuneConfig) and loaded.config.id2label == ID2LABEL
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, loaded(x).logits)


def test_pickle_checkpoints_are_refused_unless_asked_for(model, tmp_path):
    model.save_pretrained(tmp_path, export_format="hubtune")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    (tmp_path / "model.safetensors").unlink()
    torch.save(state, tmp_path / "pytorch_model.bin")
    with pytest.raises(PickleCheckpointError, match="allow_pickle=True"):
        HubtuneForImageClassification.from_pretrained(tmp_path)
    loaded = HubtuneForImageClassification.from_pretrained(tmp_path, allow_pickle=True)
    torch.testing.assert_close(loaded.classifier.weight, model.classifier.weight)


def test_missing_weights_file_is_named(model, tmp_path):
    model.save_pretrained(tmp_path, export_format="hubtune")
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        HubtuneForImageClassification.from_pretrained(tmp_path)


def test_truncated_weights_and_bad_config_files_are_named(model, tmp_path):
    model.save_pretrained(tmp_path, export_format="hubtune")
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(WeightsFileError, match="model.safetensors is truncated or corrupt"):
        HubtuneForImageClassification.from_pretrained(tmp_path)
    for content in ("[1, 2]", "\x00\x01 not json"):
        (tmp_path / "config.json").write_text(content)
        with pytest.raises(WeightsFileError, match="config.json"):
            HubtuneForImageClassification.from_pretrained(tmp_path)


def test_a_checkpoint_folder_loads_through_the_auto_classes(model, tmp_path):
    from transformers import AutoConfig, AutoModelForImageClassification

    model.save_pretrained(tmp_path, export_format="hubtune")
    assert isinstance(AutoConfig.from_pretrained(tmp_path), HubtuneConfig)
    loaded = AutoModelForImageClassification.from_pretrained(tmp_path)
    assert isinstance(loaded, HubtuneForImageClassification)
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, model(x).logits)


def test_a_hubtune_0_1_config_still_loads(model, tmp_path):
    """Older config.json files name the knobs loss_kwargs / method_preset / projector_dim."""
    import json

    model.save_pretrained(tmp_path, export_format="hubtune")
    config = json.loads((tmp_path / "config.json").read_text())
    knobs = config.pop("method_config")
    config.update(method_preset=knobs.pop("preset"), projector_dim=knobs.pop("projector_dim"),
                  loss_kwargs={"eta": 0.3, "temperature": knobs["temperature"]})
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = HubtuneForImageClassification.from_pretrained(tmp_path)
    assert loaded.config.method_config["eta"] == 0.3 and loaded.loss_fn.eta == 0.3
    assert loaded.config.method_config["preset"] == "paper"


def test_wrong_channels_and_a_batch_norm_batch_of_one_are_clear_errors(model):
    model.eval()
    with pytest.raises(ConfigError, match="1 channel\\(s\\) but this model takes 3"):
        model(torch.randn(2, 1, 32, 32))
    model.train()
    with pytest.raises(ConfigError, match="training batch of 1 image"):
        model(torch.randn(1, 3, 32, 32), labels=torch.tensor([0]))  # resnet18 at 32 px ends in a 1x1 map
    model.eval()


def test_non_finite_weights_are_never_written(tmp_path):
    net = HubtuneForImageClassification.from_backbone("resnet18", num_labels=2, image_size=32, method="ce")
    with torch.no_grad():
        net.classifier.weight[0, 0] = float("nan")
    for export_format in ("hubtune", "timm"):
        with pytest.raises(ExportError, match="NaN or inf"):
            net.save_pretrained(tmp_path / export_format, export_format=export_format)
        assert not (tmp_path / export_format / "model.safetensors").exists()


def test_adaptivemix_method_trains_and_its_reference_preset_uses_the_subspace_head():
    net = HubtuneForImageClassification.from_backbone("resnet18", num_labels=3, method="adaptivemix", image_size=32)
    net.train()
    out = net(torch.randn(4, 3, 32, 32), labels=torch.tensor([0, 1, 2, 0]))
    assert set(out.loss_components) == {"ce_loss", "shrinkage_loss"} and torch.isfinite(out.loss)
    out.loss.backward()
    assert net.classifier.weight.grad is not None

    ref = HubtuneForImageClassification.from_backbone(
        "resnet18", num_labels=3, method="adaptivemix", method_config={"preset": "reference"}, image_size=32
    )
    assert ref.config.normalize_features and ref.config.classifier_type == "orthogonal-abs"
    assert not ref.classifier.weight.requires_grad
    w = ref.classifier.weight
    torch.testing.assert_close(w @ w.T, torch.eye(3), atol=1e-5, rtol=0)  # orthogonal rows
    ref.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        u = F.normalize(ref.backbone(x), dim=-1)
        torch.testing.assert_close(ref(x).logits, (u @ w.T).abs())
    assert ref.config.default_export_format == "hubtune"


def test_adaptivemix_over_a_transformers_backbone(tmp_path):
    import transformers

    config = transformers.ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                    image_size=32, patch_size=8)
    transformers.ViTForImageClassification(config).save_pretrained(tmp_path)
    net = HubtuneForImageClassification.from_backbone(str(tmp_path), num_labels=3, method="adaptivemix")
    net.train()
    out = net(torch.randn(4, 3, 32, 32), labels=torch.tensor([0, 1, 2, 0]))
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert net.backbone.model.vit.embeddings.patch_embeddings.projection.weight.grad.abs().sum() > 0


def test_import_hubtune_is_enough_for_the_auto_classes(model, tmp_path):
    import subprocess
    import sys

    model.save_pretrained(tmp_path, export_format="hubtune")
    code = ("import hubtune; from transformers import AutoModelForImageClassification as A; "
            f"m = A.from_pretrained({str(tmp_path)!r}); print(type(m).__name__, m.config.num_labels)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[-2:] == ["HubtuneForImageClassification", "3"]
