"""The exported preprocessing is hubtune's eval transform: transformers' pipeline() on a transformers export
predicts what hubtune's own evaluation predicts on every image of a real dataset (scikit-learn's digits), and
timm's resolve_data_config / create_transform on a timm export's pretrained_cfg gives hubtune's eval tensors."""

from __future__ import annotations

import pytest
import timm
import torch
from timm.data import create_transform, resolve_data_config
from transformers import AutoImageProcessor, ResNetConfig, ViTConfig, pipeline

from hubtune.backbones import PreprocessingConfig
from hubtune.data import build_transforms, collate_image_batch, load_image_classification_data, with_transforms
from hubtune.modeling import HubtuneForImageClassification


@pytest.fixture(scope="module")
def digits():
    return load_image_classification_data("digits")


@pytest.fixture(scope="module")
def trained_export(digits, tmp_path_factory):
    """A small transformers ResNet trained for 3 epochs on digits (so that predictions mean something), exported."""
    folder = tmp_path_factory.mktemp("resnet")
    ResNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], layer_type="basic",
                 image_size=32).save_pretrained(folder)
    torch.manual_seed(0)
    model = HubtuneForImageClassification.from_backbone(str(folder), id2label=digits.id2label, method="ce",
                                                        image_size=32)
    train = with_transforms(digits.train, build_transforms(model.preprocessing, train=True))
    loader = torch.utils.data.DataLoader(train, batch_size=64, shuffle=True, collate_fn=collate_image_batch,
                                         generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(3):
        for batch in loader:
            optimizer.zero_grad()
            model(**batch).loss.backward()
            optimizer.step()
    model.eval()
    export = tmp_path_factory.mktemp("export")
    model.save_pretrained(export)
    return model, export


def _hubtune_eval(model, images):
    transform = build_transforms(model.preprocessing, train=False)
    with torch.no_grad():
        logits = model(pixel_values=torch.stack([transform(image) for image in images])).logits
    return [model.config.id2label[int(i)] for i in logits.argmax(-1)]


def test_pipeline_predicts_what_hubtune_evaluation_predicts_on_every_digits_image(digits, trained_export):
    model, export = trained_export
    images = [row["image"] for row in digits.eval]
    labels = [digits.id2label[int(row["label"])] for row in digits.eval]
    ours = _hubtune_eval(model, images)
    assert sum(p == t for p, t in zip(ours, labels)) / len(labels) > 0.5  # a model that learnt something
    classifier = pipeline("image-classification", model=str(export), device="cpu")
    theirs = [result[0]["label"] for result in classifier(images, top_k=1, batch_size=64)]
    disagree = [i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b]
    assert not disagree, f"{len(disagree)} of {len(images)} images predicted differently, e.g. {disagree[:10]}"


def test_the_exported_processor_gives_hubtune_eval_tensors(digits, trained_export):
    model, export = trained_export
    images = [digits.eval[i]["image"] for i in range(64)]
    expected = torch.stack([build_transforms(model.preprocessing, train=False)(image) for image in images])
    pil = AutoImageProcessor.from_pretrained(export, backend="pil")(images, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(pil, expected, atol=1e-6, rtol=0)
    # transformers' default backend resizes with torchvision's kernel: at most one grey level apart
    default = AutoImageProcessor.from_pretrained(export)(images, return_tensors="pt")["pixel_values"]
    assert (default - expected).abs().max() <= 1.01 / 255 / min(model.preprocessing.std)
    # and hubtune reads the export's preprocessing back unchanged
    assert HubtuneForImageClassification.from_pretrained(str(export)).preprocessing == model.preprocessing


@pytest.mark.parametrize("pre", [
    PreprocessingConfig(input_size=(3, 32, 32)),
    PreprocessingConfig(input_size=(3, 40, 40), interpolation="bilinear", crop_pct=0.95, mean=(0.5,) * 3,
                        std=(0.25,) * 3),
    PreprocessingConfig(input_size=(3, 24, 32), interpolation="bicubic", crop_pct=0.8),
], ids=["default", "bilinear-0.95", "non-square"])
@pytest.mark.parametrize("library", ["timm", "transformers"])
def test_exported_preprocessing_reproduces_hubtune_eval(library, pre, digits, tmp_path, request):
    if library == "timm" and pre.image_size[0] != pre.image_size[1]:
        request.applymarker(pytest.mark.xfail(strict=True, reason=(
            "known: for a non-square input size hubtune's eval resizes both edges by 1 / crop_pct (as the "
            "transformers export does); timm 1.0.31 keeps the aspect ratio (ResizeKeepRatio)")))
    if library == "timm":
        model = HubtuneForImageClassification.from_backbone("test_resnet", id2label=digits.id2label)
    else:
        ViTConfig(image_size=list(pre.image_size), patch_size=8, hidden_size=32, num_hidden_layers=1,
                  num_attention_heads=2, intermediate_size=64).save_pretrained(tmp_path / "vit")
        model = HubtuneForImageClassification.from_backbone(str(tmp_path / "vit"), id2label=digits.id2label)
    model.config.preprocessing = pre.to_dict()
    model.save_pretrained(tmp_path / "export")
    images = [digits.eval[i]["image"] for i in range(32)]
    expected = torch.stack([build_transforms(pre, train=False)(image) for image in images])
    if library == "timm":  # as timm's documentation does: resolve_data_config(model=...), create_transform(**cfg)
        loaded = timm.create_model(f"local-dir:{tmp_path / 'export'}", pretrained=True)
        transform = create_transform(**resolve_data_config(model=loaded))
        actual = torch.stack([transform(image.convert("RGB")) for image in images])
    else:
        processor = AutoImageProcessor.from_pretrained(tmp_path / "export", backend="pil")
        actual = processor(images, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(actual, expected, atol=1e-6, rtol=0)
    assert HubtuneForImageClassification.from_pretrained(str(tmp_path / "export")).preprocessing == pre
