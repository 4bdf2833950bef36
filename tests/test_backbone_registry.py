"""The backbone library registry: a toy library defined and registered here is created by name, rebuilt from its
spec, trained by `hubtune finetune` with CE and with DELTA (which reads its feature maps through the library), and
saved and loaded through the export layout paired with it; the built-in libraries are entries of the same registry."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from hubtune.backbones import (
    BACKBONE_LIBRARIES,
    Backbone,
    BackboneError,
    BackboneLibrary,
    PreprocessingConfig,
    PretrainedWeightsError,
    backbone_from_spec,
    create_backbone,
    register_backbone_library,
    resolve_library,
    unregister_backbone_library,
)
from hubtune.commands import main
from hubtune.layouts import detect_layout, register_layout, unregister_layout
from hubtune.modeling import HubtuneForImageClassification
from layouts.test_export import FlatLayout  # the toy export layout of tests/layouts


class ToyNet(nn.Module):
    """Two conv stages and a global average pool; the stages' outputs are its feature maps."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(nn.Conv2d(3, width, 3, stride=2, padding=1), nn.ReLU())
        self.stage2 = nn.Sequential(nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU())

    def forward_maps(self, x):
        first = self.stage1(x)
        second = self.stage2(first)
        return second.mean(dim=(2, 3)), [first, second]

    def forward(self, x):
        return self.forward_maps(x)[0]


class ToyLibrary(BackboneLibrary):
    """Backbones named ``toy:WIDTH``; no pretrained weights."""

    name = "toy"
    export_layout = FlatLayout.name
    usage = "'toy:WIDTH' for a toy conv net"

    def claims(self, name):
        return name.startswith("toy:")

    def create(self, name, pretrained, model_kwargs, keep_source_classifier=False, random_weights=""):
        if pretrained:
            raise PretrainedWeightsError(f"{name!r}: toy backbones have no pretrained weights; pass {random_weights}.")
        return self.from_spec({"library": self.name, "name": name, "width": int(name[len("toy:"):])}, None)

    def from_spec(self, spec, preprocessing):
        preprocessing = preprocessing or PreprocessingConfig(input_size=(3, 16, 16), mean=(0.5,) * 3, std=(0.25,) * 3)
        return Backbone(self, ToyNet(spec["width"]), dict(spec), preprocessing, 2 * spec["width"])

    def pooled(self, model, pixel_values):
        return model(pixel_values)

    def feature_levels(self, backbone):
        return [("stage1", 2), ("stage2", 4)]

    def intermediates(self, model, pixel_values, indices):
        pooled, maps = model.forward_maps(pixel_values)
        return pooled, [maps[i] for i in indices]


@pytest.fixture()
def toy_library():
    """A new backbone library is one class plus one registration (and here the layout it exports to)."""
    register_backbone_library(ToyLibrary)
    register_layout(FlatLayout)
    yield ToyLibrary.name
    unregister_layout(FlatLayout.name)
    unregister_backbone_library(ToyLibrary.name)
    assert ToyLibrary.name not in BACKBONE_LIBRARIES


def test_the_built_in_libraries_are_registry_entries_paired_with_their_layouts():
    assert BACKBONE_LIBRARIES.names()[:2] == ("timm", "transformers")  # asked in this order
    for name in ("timm", "transformers"):
        assert BACKBONE_LIBRARIES.get(name).export_layout == name


def test_a_toy_library_is_created_by_name_and_rebuilt_from_its_spec(toy_library):
    assert resolve_library("toy:6") == toy_library and resolve_library("resnet18") == "timm"
    torch.manual_seed(0)
    backbone = create_backbone("toy:6").eval()
    assert (backbone.library, backbone.num_features, backbone.spec["name"]) == ("toy", 12, "toy:6")
    x = torch.randn(2, 3, 16, 16)
    assert backbone(x).shape == (2, 12)
    rebuilt = backbone_from_spec(json.loads(json.dumps(backbone.spec)), backbone.preprocessing.to_dict())
    rebuilt.load_state_dict(backbone.state_dict())  # strict: the same parameter names and shapes
    torch.testing.assert_close(rebuilt.eval()(x), backbone(x))
    assert backbone.library_entry.feature_map_modules(backbone) == ["stage1", "stage2"]
    with pytest.raises(PretrainedWeightsError, match="no pretrained weights; pass --pretrained false"):
        create_backbone("toy:6", pretrained=True)
    with pytest.raises(BackboneError, match=r"Unknown backbone 'toi:6'.*'toy:WIDTH' for a toy conv net"):
        create_backbone("toi:6")


def test_a_spec_of_a_library_that_is_not_registered_is_one_line(toy_library):
    spec = create_backbone("toy:4").spec
    unregister_backbone_library(toy_library)
    with pytest.raises(BackboneError, match="names library 'toy', which is not registered .*import the plug-in"):
        backbone_from_spec(spec)
    with pytest.raises(BackboneError, match="Unknown backbone 'toy:4'"):
        create_backbone("toy:4")


def _logits(model, x):
    with torch.no_grad():
        return model.eval()(pixel_values=x).logits


def test_a_toy_backbone_saves_and_loads_through_its_paired_layout_and_hubtune_s(toy_library, tmp_path):
    torch.manual_seed(0)
    model = HubtuneForImageClassification.from_backbone("toy:4", id2label={0: "a", 1: "b"}, method="ce")
    x = torch.randn(3, 3, 16, 16)
    assert model.config.default_export_format == FlatLayout.name
    model.save_pretrained(tmp_path / "auto")  # export_format="auto": the layout paired with the library
    assert detect_layout(tmp_path / "auto") == FlatLayout.name
    model.save_pretrained(tmp_path / "hubtune", export_format="hubtune")
    for folder in ("auto", "hubtune"):
        loaded = HubtuneForImageClassification.from_pretrained(tmp_path / folder)
        assert loaded.backbone.library == toy_library and loaded.config.id2label == {0: "a", 1: "b"}
        torch.testing.assert_close(_logits(loaded, x), _logits(model, x))


@pytest.mark.parametrize("method", ["ce", "delta"])
def test_a_toy_backbone_trains_through_hubtune_finetune(toy_library, method, tmp_path, capsys):
    out = tmp_path / method
    assert main(["finetune", "--model", "toy:4", "--method", method, "--max_steps", "2", "--max_train_samples", "16",
                 "--max_eval_samples", "8", "--batch-size", "8", "--output_dir", str(out), "--disable_tqdm",
                 "true", "--logging_steps", "1"]) == 0, capsys.readouterr().err
    assert detect_layout(out) == FlatLayout.name  # the final model, in the layout paired with the toy library
    loaded = HubtuneForImageClassification.from_pretrained(out)
    assert loaded.backbone.library == toy_library
    (checkpoint,) = out.glob("checkpoint-*")
    config = json.loads((checkpoint / "config.json").read_text())
    assert config["backbone_spec"]["library"] == toy_library and config["method"] == method
    if method == "delta":  # DELTA read both stages' maps through the library: one attention per stage's channels
        assert config["method_config"]["layers"] == "stage1,stage2"
        resumed = HubtuneForImageClassification.from_pretrained(checkpoint)
        assert [a.numel() for a in resumed.delta_attention.weights()] == [4, 8]
        assert bool(resumed.delta_attention.ready)
        logged = json.loads((checkpoint / "trainer_state.json").read_text())["log_history"]
        assert logged[0]["feature_map_loss"] == 0.0 < logged[1]["feature_map_loss"]  # the maps moved after step 1
