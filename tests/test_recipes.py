"""The recipes in recipes/ parse with their command's parser, and each STARTS and runs 2 steps on CPU at a tiny
size with a local stand-in dataset of the same schema (same columns and splits as the Hub dataset)."""

import json
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from hubtune.commands import main
from hubtune.commands.gan import build_parser as gan_parser
from hubtune.arguments import parse_command_line
from hubtune.training import parse_finetune_args

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
CORE_TUNING = {
    "core_tuning_cifar10_resnet50.yaml": ("uoft-cs/cifar10", "label", 97.31),
    "core_tuning_cifar100_resnet50.yaml": ("uoft-cs/cifar100", "fine_label", 84.13),
}
GAN_RECIPES = sorted(p.name for p in RECIPES.glob("adaptivemix_gan_*.yaml"))


def _images(n, size, seed):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def _stand_in(path, label_column, num_classes=3):
    """A save_to_disk DatasetDict shaped like the CIFAR datasets: splits train / test, columns img + labels."""
    features = datasets.Features({"img": datasets.Image(),
                                  label_column: datasets.ClassLabel(names=[f"c{i}" for i in range(num_classes)])})
    splits = {}
    for split, n in (("train", 16), ("test", 6)):
        splits[split] = datasets.Dataset.from_dict(
            {"img": _images(n, 12, len(split)), label_column: [i % num_classes for i in range(n)]}, features=features)
    datasets.DatasetDict(splits).save_to_disk(str(path))
    return path


@pytest.mark.parametrize("name", sorted(CORE_TUNING))
def test_core_tuning_recipe_parses_with_the_papers_setting(name):
    dataset, label_column, published = CORE_TUNING[name]
    text = (RECIPES / name).read_text()
    assert f"{published}" in text and "hubtune convert" in text, "the published number and the conversion step"
    assert "\nbf16: true" in text  # the GPU setting; a CPU refuses bf16, so it is turned off to parse here
    model_args, data_args, method_args, train_args = parse_finetune_args([str(RECIPES / name), "--bf16", "false"])
    assert data_args.dataset == dataset and data_args.label_column == label_column and data_args.eval_split == "test"
    assert model_args.image_size == 224 and model_args.pretrained and model_args.model.startswith("local-dir:")
    assert method_args.method == "core-tuning" and method_args.eta == 0.1
    assert str(getattr(train_args.optim, "value", train_args.optim)) == "sgd"
    assert train_args.learning_rate == 0.01 and train_args.weight_decay == 1e-4
    assert train_args.per_device_train_batch_size == 64 and train_args.gradient_accumulation_steps == 4
    assert str(getattr(train_args.lr_scheduler_type, "value", train_args.lr_scheduler_type)) == "cosine"
    assert "nesterov=True" in train_args.optim_args and "momentum=0.9" in train_args.optim_args


@pytest.mark.parametrize("name", sorted(CORE_TUNING))
def test_core_tuning_recipe_starts_and_runs_two_steps(name, tmp_path):
    _, label_column, _ = CORE_TUNING[name]
    data = _stand_in(tmp_path / "data", label_column)
    out = tmp_path / "out"
    code = main(["finetune", str(RECIPES / name), "--dataset", str(data), "--model", "test_resnet",
                 "--pretrained", "false", "--max_steps", "2", "--image_size", "32",
                 "--per_device_train_batch_size", "8", "--gradient_accumulation_steps", "1", "--bf16", "false",
                 "--output_dir", str(out), "--eval_strategy", "no", "--save_strategy", "no",
                 "--dataloader_num_workers", "0", "--per_device_eval_batch_size", "8", "--logging_steps", "1"])
    assert code == 0
    run = json.loads((out / "all_results.json").read_text())
    assert run  # the job finished and wrote its results
    state = json.loads((out / "hubtune_run.json").read_text())
    assert "core-tuning" in json.dumps(state)


def test_there_is_a_gan_recipe():
    assert GAN_RECIPES, "recipes/adaptivemix_gan_*.yaml"


@pytest.mark.parametrize("name", GAN_RECIPES)
def test_gan_recipe_parses_and_runs_two_steps(name, tmp_path):
    (arguments,) = parse_command_line(gan_parser(), [str(RECIPES / name)])
    config, deprecations = arguments.to_config()
    assert not deprecations, "recipes use today's option names"
    optim = config.optim
    assert config.adaptive_mix.adaptivemix and optim.r1_gamma == 1.0 and optim.per_device_train_batch_size == 64
    assert optim.lr_g == 0.0025 and optim.adam_beta1 == 0.0 and optim.adam_beta2 == 0.99
    folder = tmp_path / "images"
    folder.mkdir()
    for i, image in enumerate(_images(16, 32, 0)):
        image.save(folder / f"{i}.png")
    out = tmp_path / "gan"
    code = main(["gan", str(RECIPES / name), "--dataset", str(folder), "--output_dir", str(out),
                 "--arch_preset", "small", "--image_size", "32", "--max_steps", "2",
                 "--per_device_train_batch_size", "8", "--eval_num_samples", "0", "--no_progress_bar",
                 "--log_every", "1", "--sample_every", "1000", "--checkpoint_every", "1000", "--num_sample_images", "4"])
    assert code == 0
    assert (out / "config.json").is_file() or any(out.iterdir())
