"""One backbone interface over timm and transformers: pooled features, sizes, preprocessing, errors."""

import json

import pytest
import timm
import torch
import transformers

from hubtune.backbones import (
    BackboneError,
    PretrainedWeightsError,
    backbone_from_spec,
    create_backbone,
    resolve_library,
)


def _tiny_vit_config(**kw):
    return transformers.ViTConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8, **kw
    )


TINY_TRANSFORMERS_CONFIGS = {
    "vit": _tiny_vit_config,
    "deit": lambda: transformers.DeiTConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8
    ),
    "dinov2": lambda: transformers.Dinov2Config(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8
    ),
    "convnext": lambda: transformers.ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, image_size=32),
    "swin": lambda: transformers.SwinConfig(
        image_size=32, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 1], window_size=4
    ),
    "resnet": lambda: transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], image_size=32),
}


def test_timm_name_gives_pooled_features_size_and_preprocessing():
    backbone = create_backbone("resnet18", image_size=32)
    assert backbone.library == "timm" and backbone.num_features == 512
    assert backbone.preprocessing.input_size == (3, 32, 32)
    assert backbone.preprocessing.mean == pytest.approx(timm.data.IMAGENET_DEFAULT_MEAN)
    out = backbone(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 512)


def test_timm_spec_rebuilds_the_same_architecture_offline():
    backbone = create_backbone("resnet18")
    rebuilt = backbone_from_spec(json.loads(json.dumps(backbone.spec)), backbone.preprocessing)
    rebuilt.load_state_dict(backbone.state_dict())  # strict: the same parameter names and shapes
    backbone.eval(), rebuilt.eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(backbone(x), rebuilt(x))


def test_timm_local_dir_loads_saved_weights(tmp_path):
    source = timm.create_model("resnet18", num_classes=7).eval()
    timm.models.save_for_hf(source, str(tmp_path), safe_serialization=True)
    backbone = create_backbone(f"local-dir:{tmp_path}", pretrained=True).eval()
    assert backbone.spec["architecture"] == "resnet18"
    assert "num_classes" not in backbone.spec["model_args"]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = source.forward_head(source.forward_features(x), pre_logits=True)
        torch.testing.assert_close(backbone(x), expected)
    # a plain folder path is recognised as timm through its config.json
    assert resolve_library(str(tmp_path)) == "timm"


@pytest.mark.parametrize("model_type", sorted(TINY_TRANSFORMERS_CONFIGS))
def test_transformers_backbones_pool_what_their_classifier_reads(tmp_path, model_type):
    config = TINY_TRANSFORMERS_CONFIGS[model_type]()
    config.num_labels = 3
    cls = transformers.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING[type(config)]
    cls = cls[0] if isinstance(cls, tuple) else cls
    reference = cls(config).eval()
    reference.save_pretrained(tmp_path)
    backbone = create_backbone(str(tmp_path), pretrained=True).eval()
    assert backbone.library == "transformers"
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        features = backbone(x)
        # the reference classifier applied to our pooled features gives the reference logits exactly
        classifier = [m for m in reference.modules() if isinstance(m, torch.nn.Linear)][-1]
        torch.testing.assert_close(classifier(features), reference(pixel_values=x).logits, rtol=1e-5, atol=1e-5)
    assert features.shape == (2, backbone.num_features)
    rebuilt = backbone_from_spec(json.loads(json.dumps(backbone.spec)), backbone.preprocessing)
    rebuilt.load_state_dict(backbone.state_dict())


def test_transformers_preprocessing_comes_from_the_image_processor(tmp_path):
    transformers.ViTForImageClassification(_tiny_vit_config()).save_pretrained(tmp_path)
    transformers.ViTImageProcessor(image_mean=[0.5, 0.5, 0.5], image_std=[0.25, 0.25, 0.25], size={"height": 32, "width": 32}).save_pretrained(tmp_path)
    backbone = create_backbone(str(tmp_path))
    assert backbone.preprocessing.mean == (0.5, 0.5, 0.5)
    assert backbone.preprocessing.std == (0.25, 0.25, 0.25)
    assert backbone.preprocessing.input_size == (3, 32, 32)


def test_unknown_name_says_how_to_find_valid_names():
    with pytest.raises(BackboneError, match=r"timm.list_models.*resnet18"):
        create_backbone("resnet_18")


def test_folder_without_config_is_a_clear_error(tmp_path):
    with pytest.raises(BackboneError, match="no config.json"):
        create_backbone(str(tmp_path))


def test_unpooled_backbone_is_a_clear_error():
    with pytest.raises(BackboneError, match="not pooled"):
        create_backbone("resnet18", global_pool="")


def test_failed_download_is_an_error_not_random_weights(local_hub):
    # The session's HF_ENDPOINT is the local test Hub, which has no timm/resnet18 weights.
    with pytest.raises(PretrainedWeightsError, match="--pretrained false to start from random weights"):
        create_backbone("resnet18", pretrained=True)
    with pytest.raises(PretrainedWeightsError):
        create_backbone("hf-hub:nobody/missing-model", pretrained=True)


def test_pretrained_weights_from_the_hub_for_timm_and_transformers(local_hub, hub_token, hub_repo_id, tmp_path, monkeypatch):
    from huggingface_hub import HfApi

    monkeypatch.setenv("HF_TOKEN", hub_token)
    api = HfApi(token=hub_token)
    x = torch.randn(2, 3, 32, 32)

    source = timm.create_model("resnet18", num_classes=4).eval()
    timm.models.save_for_hf(source, str(tmp_path / "timm"), safe_serialization=True)
    api.create_repo(hub_repo_id)
    api.upload_folder(repo_id=hub_repo_id, folder_path=str(tmp_path / "timm"))
    assert resolve_library(hub_repo_id) == "timm"  # a timm repo is recognised from its config.json
    backbone = create_backbone(hub_repo_id, pretrained=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(backbone(x), source.forward_head(source.forward_features(x), pre_logits=True))

    vit_repo = hub_repo_id + "-vit"
    reference = transformers.ViTForImageClassification(_tiny_vit_config()).eval()
    reference.save_pretrained(tmp_path / "vit")
    api.create_repo(vit_repo)
    api.upload_folder(repo_id=vit_repo, folder_path=str(tmp_path / "vit"))
    assert resolve_library(vit_repo) == "transformers"
    backbone = create_backbone(vit_repo, pretrained=True).eval()
    with torch.no_grad():
        cls_token = reference.vit(pixel_values=x).last_hidden_state[:, 0]
        torch.testing.assert_close(backbone(x), cls_token)
