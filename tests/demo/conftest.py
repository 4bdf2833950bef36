"""Tiny models for the demo tests: a StyleGAN2 generator and a timm classifier saved as output folders with
their cards (as `hubtune gan` / `hubtune finetune` leave them)."""

from __future__ import annotations

import json

import pytest
import torch

DIGIT_LABELS = {i: str(i) for i in range(10)}


@pytest.fixture(scope="session")
def generator_folder(tmp_path_factory):
    from hubtune.gan import StyleGAN2Generator

    torch.manual_seed(0)
    generator = StyleGAN2Generator(image_size=32, channels=1, latent_dim=16, w_dim=16, mapping_layers=2,
                                   channel_base=256, channel_max=16)
    with torch.no_grad():  # a w average away from 0, as training leaves it: psi then moves every image
        generator.mapping.w_avg.normal_()
    generator.training_info = {"training": None, "data_source": "digits (scikit-learn load_digits)"}
    folder = tmp_path_factory.mktemp("gan") / "out"
    generator.save_pretrained(folder)
    (folder / "training_config.json").write_text(json.dumps({"dataset": "digits", "adaptivemix": True}))
    (folder / "metrics.json").write_text(json.dumps({"fid": 123.4, "kid_mean": 0.05, "comparable": False}))
    return folder


@pytest.fixture(scope="session")
def classifier_folder(tmp_path_factory):
    from hubtune.hub import write_model_card, write_run_info
    from hubtune.hub.examples import write_demo_examples
    from hubtune.modeling import HubtuneForImageClassification

    torch.manual_seed(0)
    model = HubtuneForImageClassification.from_backbone("test_resnet", id2label=DIGIT_LABELS, image_size=32,
                                                        method="ce")
    with torch.no_grad():  # a head that tells the digits apart is not needed: a fixed random one is
        model.classifier.weight.normal_()
    model.eval()
    folder = tmp_path_factory.mktemp("cls") / "out"
    model.save_pretrained(folder)
    run_info = model.run_info(dataset="digits", metrics={"eval_accuracy": 0.875, "eval_runtime": 1.5})
    write_run_info(folder, run_info)
    write_model_card(folder, run_info)
    write_demo_examples(folder, _digits().eval, DIGIT_LABELS, model.preprocessing)  # as `hubtune finetune` does
    return folder


def _digits():
    from hubtune.data import load_image_classification_data

    return load_image_classification_data("digits", max_eval_samples=40)
