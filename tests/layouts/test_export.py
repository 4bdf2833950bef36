"""Exports in timm's and transformers' layouts load in the plain libraries with the hubtune model's logits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoImageProcessor, AutoModelForImageClassification, ViTConfig

from hubtune.errors import ExportError, PickleCheckpointError
from hubtune.layouts import (
    LIBRARY_LAYOUTS,
    ClassifierParts,
    LibraryLayout,
    detect_layout,
    probe_input,
    register_layout,
    unregister_layout,
    write_library_layout,
)
from hubtune.modeling import HubtuneForImageClassification

load_export = HubtuneForImageClassification.from_pretrained


def save_export(model, folder, export_format="auto", **kwargs):
    return model.save_pretrained(folder, export_format=export_format, **kwargs)

LABELS = {0: "cat", 1: "dog", 2: "bird"}
TOL = 1e-5


def _perturb(model):
    """Non-trivial classifier weights and BN statistics, so a wrong mapping cannot pass by accident."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        model.classifier.weight.copy_(torch.randn(model.classifier.weight.shape, generator=g))
        if model.classifier.bias is not None:
            model.classifier.bias.copy_(torch.randn(model.classifier.bias.shape, generator=g))
        for module in model.backbone.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5, generator=g)
                module.running_var.uniform_(0.5, 1.5, generator=g)
    return model.eval()


@pytest.fixture(scope="module")
def timm_model():
    torch.manual_seed(0)
    return _perturb(HubtuneForImageClassification.from_backbone("test_resnet", id2label=LABELS, image_size=32))


@pytest.fixture(scope="module")
def vit_config_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vit-config")
    ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
              intermediate_size=64).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def vit_model(vit_config_dir):
    torch.manual_seed(0)
    return _perturb(HubtuneForImageClassification.from_backbone(str(vit_config_dir), id2label=LABELS))


def _pixels(seed=3):
    return torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _logits(model, x):
    with torch.no_grad():
        return model(pixel_values=x).logits


def test_timm_export_loads_in_timm_transformers_and_hubtune(timm_model, tmp_path):
    timm_model.save_pretrained(tmp_path)  # default: the backbone's library
    assert detect_layout(tmp_path) == "timm"
    x = _pixels()
    expected = _logits(timm_model, x)

    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architecture"] == "test_resnet" and config["num_classes"] == 3
    assert config["label_names"] == ["cat", "dog", "bird"]
    assert "num_classes" not in config.get("model_args", {})  # the timm 1.0.31 / transformers 5 clash
    assert config["pretrained_cfg"]["input_size"] == [3, 32, 32]
    assert not any(k.startswith("projector") for k in load_file(tmp_path / "model.safetensors"))

    with_timm = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
    with torch.no_grad():
        timm_logits = with_timm(x)
    with_transformers = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    with_hubtune = HubtuneForImageClassification.from_pretrained(tmp_path)

    assert (timm_logits - expected).abs().max() <= TOL
    assert (_logits(with_transformers, x) - timm_logits).abs().max() <= TOL  # both loaders agree
    assert (_logits(with_hubtune, x) - expected).abs().max() <= TOL
    assert with_transformers.config.id2label == LABELS
    assert with_hubtune.config.id2label == LABELS
    assert with_timm.pretrained_cfg["label_names"] == ["cat", "dog", "bird"]


def test_num_classes_clash_is_what_the_fix_removes(timm_model, tmp_path):
    """Regression: timm's own config (num_classes in model_args) breaks transformers' loader; ours does not."""
    timm_model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config.setdefault("model_args", {})["num_classes"] = 3
    clashing = tmp_path / "clash"
    clashing.mkdir()
    (clashing / "config.json").write_text(json.dumps(config))
    (clashing / "model.safetensors").write_bytes((tmp_path / "model.safetensors").read_bytes())
    with pytest.raises(TypeError, match="num_classes"):
        AutoModelForImageClassification.from_pretrained(clashing)
    # hubtune itself reads both
    x = _pixels()
    assert (_logits(load_export(clashing), x) - _logits(timm_model, x)).abs().max() <= TOL


def test_bias_free_classifier_exports_with_zero_bias(tmp_path):
    torch.manual_seed(0)
    model = _perturb(HubtuneForImageClassification.from_backbone(
        "test_resnet", num_labels=2, image_size=32, classifier_bias=False))
    model.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    head_bias = [v for k, v in state.items() if v.shape == (2,)]
    assert len(head_bias) == 1 and torch.count_nonzero(head_bias[0]) == 0
    reloaded = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
    x = _pixels()
    with torch.no_grad():
        assert (reloaded(x) - _logits(model, x)).abs().max() <= TOL


def test_transformers_export_loads_with_auto_classes(vit_model, tmp_path):
    vit_model.save_pretrained(tmp_path)
    assert detect_layout(tmp_path) == "transformers"
    assert {p.name for p in tmp_path.iterdir()} >= {"config.json", "model.safetensors", "preprocessor_config.json"}
    x = _pixels()
    expected = _logits(vit_model, x)

    plain = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    assert type(plain).__name__ == "ViTForImageClassification"
    assert plain.config.id2label == LABELS
    assert (_logits(plain, x) - expected).abs().max() <= TOL
    assert (_logits(HubtuneForImageClassification.from_pretrained(tmp_path), x) - expected).abs().max() <= TOL

    processor = AutoImageProcessor.from_pretrained(tmp_path)
    pixel_values = processor(images=torch.randint(0, 256, (3, 48, 40), dtype=torch.uint8), return_tensors="pt")[
        "pixel_values"]
    assert tuple(pixel_values.shape) == (1, 3, 32, 32)
    assert list(processor.image_mean) == pytest.approx(list(vit_model.preprocessing.mean))


def test_hubtune_format_keeps_the_projector(timm_model, tmp_path):
    save_export(timm_model, tmp_path, export_format="hubtune")
    assert detect_layout(tmp_path) == "hubtune"
    assert any(k.startswith("projector") for k in load_file(tmp_path / "model.safetensors"))
    reloaded = HubtuneForImageClassification.from_pretrained(tmp_path)
    for name, tensor in timm_model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[name], tensor), name


def test_heads_a_library_cannot_express_are_refused(tmp_path):
    model = HubtuneForImageClassification.from_backbone(
        "test_resnet", num_labels=3, image_size=32, method="adaptivemix", method_config={"preset": "reference"})
    assert model.config.default_export_format == "hubtune"
    with pytest.raises(ExportError, match="export_format='hubtune'"):
        save_export(model, tmp_path / "forced", export_format="timm")
    assert not (tmp_path / "forced").exists()
    with pytest.raises(ExportError, match="cannot be exported in the transformers layout"):
        save_export(model, tmp_path / "other", export_format="transformers")


def test_an_export_that_does_not_reproduce_the_model_is_caught(timm_model, tmp_path):
    other = _perturb(HubtuneForImageClassification.from_backbone("test_resnet", id2label=LABELS, image_size=32))
    with torch.no_grad():
        other.classifier.bias.add_(1.0)
    expected = _logits(other, probe_input(timm_model.config.preprocessing))
    with pytest.raises(ExportError, match="does not reproduce the model.*export_format='hubtune'"):
        write_library_layout(timm_model._library_parts(), "timm", tmp_path / "out", expected)
    assert not (tmp_path / "out").exists()


def test_missing_files_are_named(timm_model, tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        detect_layout(tmp_path)
    timm_model.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_export(tmp_path)
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        HubtuneForImageClassification.from_pretrained(tmp_path)


def test_pickle_checkpoints_need_an_explicit_opt_in(timm_model, tmp_path):
    timm_model.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    (tmp_path / "model.safetensors").unlink()
    torch.save(state, tmp_path / "pytorch_model.bin")
    with pytest.raises(PickleCheckpointError, match="allow_pickle=True"):
        HubtuneForImageClassification.from_pretrained(tmp_path)
    with pytest.raises(PickleCheckpointError, match="pytorch_model.bin"):
        load_export(tmp_path)
    x = _pixels()
    loaded = HubtuneForImageClassification.from_pretrained(tmp_path, allow_pickle=True)
    assert (_logits(loaded, x) - _logits(timm_model, x)).abs().max() <= TOL


def test_transformers_pickle_refused_then_allowed(vit_model, tmp_path):
    vit_model.save_pretrained(tmp_path)
    x = _pixels()
    state = AutoModelForImageClassification.from_pretrained(tmp_path).state_dict()
    (tmp_path / "model.safetensors").unlink()
    torch.save(state, tmp_path / "pytorch_model.bin")
    with pytest.raises(PickleCheckpointError):
        load_export(tmp_path)
    loaded = load_export(tmp_path, allow_pickle=True)
    assert (_logits(loaded, x) - _logits(vit_model, x)).abs().max() <= TOL


def test_safetensors_only(timm_model, tmp_path):
    with pytest.raises(ValueError, match="safetensors"):
        save_export(timm_model, tmp_path, safe_serialization=False)
    save_file({"x": torch.zeros(1)}, tmp_path / "unused.safetensors")  # a stray file is not the weights
    (tmp_path / "config.json").write_text(json.dumps({"architecture": "test_resnet", "pretrained_cfg": {}}))
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_export(tmp_path)


def test_a_missing_local_folder_is_not_taken_for_a_repo(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        load_export(tmp_path / "no-such-folder")


def test_no_local_path_and_no_borrowed_weight_provenance_in_what_is_published(tmp_path):
    from hubtune.hub import write_model_card

    weights_dir = tmp_path / "home" / "me" / "secret-project" / "weights"
    timm.models.save_for_hf(timm.create_model("test_resnet", num_classes=0), str(weights_dir), safe_serialization=True)
    for spec, pretrained in ((f"local-dir:{weights_dir}", True), ("test_resnet", False)):
        model = HubtuneForImageClassification.from_backbone(spec, id2label=LABELS, image_size=32, pretrained=pretrained)
        out = tmp_path / f"out-{pretrained}"
        for layout in ("auto", "hubtune"):
            model.save_pretrained(out / layout, export_format=layout)
            write_model_card(out / layout, model.run_info(dataset="digits"))
            for path in (out / layout).rglob("*"):
                if path.is_file():
                    assert str(tmp_path).encode() not in path.read_bytes(), path
        config = json.loads((out / "auto" / "config.json").read_text())
        if not pretrained:  # a random init does not claim test_resnet's default pretrained tag or licence
            assert not {"tag", "license", "hf_hub_id", "url"} & set(config["pretrained_cfg"])
            assert "randomly initialised" in config["pretrained_cfg"]["description"]


@pytest.mark.parametrize("which, export_format", [("timm", "auto"), ("transformers", "auto"), ("timm", "hubtune"),
                                                  ("transformers", "hubtune")])
def test_load_save_load_round_trips_keep_the_logits(which, export_format, timm_model, vit_model, tmp_path):
    """The README's publishing snippet on a loaded model: from_pretrained(out).save_pretrained(...) twice over,
    each generation loading with the first one's logits (re-saving a timm layout raised KeyError: 'architecture')."""
    model = timm_model if which == "timm" else vit_model
    x = _pixels()
    expected = _logits(model, x)
    save_export(model, tmp_path / "gen0", export_format)
    for generation in (1, 2):
        loaded = load_export(str(tmp_path / f"gen{generation - 1}")).eval()
        torch.testing.assert_close(_logits(loaded, x), expected, atol=TOL, rtol=0)
        save_export(loaded, tmp_path / f"gen{generation}", export_format)
        expected_layout = which if export_format == "auto" else "hubtune"
        assert detect_layout(tmp_path / f"gen{generation}") == expected_layout
    torch.testing.assert_close(_logits(load_export(str(tmp_path / "gen2")).eval(), x), expected, atol=TOL, rtol=0)


def test_a_timm_layout_loaded_then_kept_as_a_hubtune_checkpoint_exports_to_timm_again(timm_model, tmp_path):
    x = _pixels()
    expected = _logits(timm_model, x)
    timm_model.save_pretrained(tmp_path / "timm")
    HubtuneForImageClassification.from_pretrained(str(tmp_path / "timm")).save_pretrained(
        tmp_path / "ckpt", export_format="hubtune")
    # a checkpoint written before the fix holds a pretrained_cfg without "architecture": strip it to be sure
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    config["backbone_spec"]["pretrained_cfg"].pop("architecture", None)
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(config))
    HubtuneForImageClassification.from_pretrained(str(tmp_path / "ckpt")).save_pretrained(tmp_path / "again")
    again = timm.create_model(f"local-dir:{tmp_path / 'again'}", pretrained=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(again(x), expected, atol=TOL, rtol=0)


@pytest.mark.parametrize("umask", [0o022, 0o077])
@pytest.mark.parametrize("export_format", ["auto", "hubtune"])
def test_weights_are_written_with_the_umask_permissions(timm_model, tmp_path, umask, export_format):
    """Weights (and the hubtune-layout checkpoints the Trainer writes) get what open() would give, 0644 under
    umask 022, not mkstemp's 0600."""
    import os
    import stat

    from hubtune.layouts import save_weights

    old = os.umask(umask)
    try:
        save_export(timm_model, tmp_path / "out", export_format)
        save_weights({"w": torch.ones(2)}, tmp_path / "w.safetensors")
    finally:
        os.umask(old)
    for path in (tmp_path / "out" / "model.safetensors", tmp_path / "w.safetensors"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path
    assert not list(tmp_path.rglob("*.tmp"))


# ------------------------------------------------------------------------------------------- a plug-in layout


class FlatLayout(LibraryLayout):
    """A toy export layout: the parts as one flat safetensors file plus a config.json that names the layout."""

    name = "toy-flat"
    drop_bias = False  # a subclass that loses the bias shows the export check applies to every layout

    def matches(self, config):
        return config.get("toy_flat_layout") == 1

    def write(self, parts, folder):
        config = {"toy_flat_layout": 1, "spec": parts.spec, "preprocessing": parts.preprocessing,
                  "id2label": {str(k): v for k, v in parts.id2label.items()}}
        (folder / "config.json").write_text(json.dumps(config))
        state = {f"backbone.{k}": v.contiguous() for k, v in parts.backbone_state.items()}
        state["head.weight"] = parts.head_weight.contiguous()
        if parts.head_bias is not None and not self.drop_bias:
            state["head.bias"] = parts.head_bias.contiguous()
        save_file(state, str(folder / "model.safetensors"))

    def reload_logits(self, folder, pixel_values):
        model = HubtuneForImageClassification.from_pretrained(str(folder))  # reads back through read() below
        return _logits(model, pixel_values)

    def read(self, source, config, *, revision, token, allow_pickle):
        state = load_file(str(Path(source) / "model.safetensors"))
        backbone = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
        id2label = {int(k): v for k, v in config["id2label"].items()}
        return ClassifierParts(config["spec"], config["preprocessing"], id2label, backbone, state["head.weight"],
                               state.get("head.bias"), str(source))


@pytest.fixture()
def flat_layout():
    """A new export layout is one class plus one registration."""
    register_layout(FlatLayout)
    yield FlatLayout.name
    unregister_layout(FlatLayout.name)
    assert FlatLayout.name not in LIBRARY_LAYOUTS


def test_a_registered_toy_layout_is_written_detected_and_read_back(flat_layout, timm_model, tmp_path):
    parts = timm_model._library_parts()
    probe = probe_input(parts.preprocessing)
    expected = _logits(timm_model, probe)
    write_library_layout(parts, flat_layout, tmp_path / "flat", expected)
    assert sorted(p.name for p in (tmp_path / "flat").iterdir()) == ["config.json", "model.safetensors"]
    assert detect_layout(tmp_path / "flat") == flat_layout
    loaded = load_export(tmp_path / "flat")  # HubtuneForImageClassification.from_pretrained
    assert loaded.config.id2label == timm_model.config.id2label
    torch.testing.assert_close(_logits(loaded, probe), expected, atol=TOL, rtol=0)


def test_a_toy_layout_that_loses_weights_is_refused_before_writing(flat_layout, timm_model, tmp_path):
    class LossyLayout(FlatLayout):
        drop_bias = True

    register_layout(LossyLayout)  # the same name: replaces the good one for this test
    parts = timm_model._library_parts()
    expected = _logits(timm_model, probe_input(parts.preprocessing))
    with pytest.raises(ExportError, match="toy-flat export does not reproduce the model"):
        write_library_layout(parts, flat_layout, tmp_path / "lossy", expected)
    assert not (tmp_path / "lossy").exists()
    with pytest.raises(ExportError, match="Unknown export layout 'toy-npz'; choose one of timm, transformers, toy-flat"):
        write_library_layout(parts, "toy-npz", tmp_path / "npz", expected)


def test_a_registered_layout_is_an_export_format_of_save_pretrained_and_hubtune_finetune(flat_layout, timm_model,
                                                                                          tmp_path, capsys):
    from hubtune.commands import main

    timm_model.save_pretrained(tmp_path / "saved", export_format=flat_layout)
    assert detect_layout(tmp_path / "saved") == flat_layout
    out = tmp_path / "run"
    assert main(["finetune", "--model", "test_resnet", "--method", "ce", "--max_steps", "1", "--max_train_samples",
                 "16", "--max_eval_samples", "8", "--batch-size", "8", "--output_dir", str(out), "--disable_tqdm",
                 "true", "--export_format", flat_layout]) == 0, capsys.readouterr().err
    assert detect_layout(out) == flat_layout and json.loads((out / "config.json").read_text())["toy_flat_layout"] == 1
    assert isinstance(load_export(out), HubtuneForImageClassification)
    unregister_layout(flat_layout)  # gone from the registry: no longer an export format, in one line
    assert main(["finetune", "--output_dir", str(tmp_path / "x"), "--export_format", flat_layout]) == 1
    err = capsys.readouterr().err.strip()
    assert f"export_format must be one of auto, hubtune, timm, transformers, not '{flat_layout}'" in err
    assert len(err.splitlines()) == 1
