"""The demo app, served on a free local port and driven with the official Gradio client, as a visitor would.

The generator's page: the same seed gives the same grid, which holds the generator's own images; psi changes
them; bad seeds, counts and psi values get a message. The classifier's page: a digit gives the top-5 labels of
the model's eval preprocessing, checked against an independent resize/crop/normalise. Neither app writes into
the model folder, even when it is the working directory.
"""

from __future__ import annotations

import io
import json
import math
import os
import urllib.request

import numpy as np
import pytest
import torch
from demo_helpers import digest, free_port
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from hubtune.demo import launch_demo
from hubtune.demo.model import MAX_UPLOAD_PIXELS
from hubtune.gan import Generator
from hubtune.modeling import HubtuneForImageClassification


def _serve(folder):
    """(client, blocks, files before) for the app of ``folder``, started with that folder as working directory."""
    before = digest(folder)
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        blocks = launch_demo(str(folder), port=free_port(), device="cpu", prevent_thread_lock=True, quiet=True)
    finally:
        os.chdir(cwd)
    return Client(blocks.local_url, verbose=False, download_files=str(folder.parent / "downloads")), blocks, before


@pytest.fixture(scope="module")
def generator_app(generator_folder):
    client, blocks, before = _serve(generator_folder)
    yield client, blocks
    blocks.close()
    assert digest(generator_folder) == before  # the app never writes into the model folder


@pytest.fixture(scope="module")
def classifier_app(classifier_folder):
    client, blocks, before = _serve(classifier_folder)
    yield client, blocks
    blocks.close()
    assert digest(classifier_folder) == before


def _page_config(blocks) -> str:
    with urllib.request.urlopen(blocks.local_url + "config", timeout=30) as response:
        return json.dumps(json.load(response))


def _pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"))  # the grey grid (the page sends it as RGB)


# --------------------------------------------------------------------------------------------- generator


def test_the_same_seed_gives_the_same_grid_of_the_generators_own_images(generator_app, generator_folder):
    client, _ = generator_app
    first = _pixels(client.predict(7, 4, 1.0, api_name="/generate"))
    again = _pixels(client.predict(7, 4, 1.0, api_name="/generate"))
    other_seed = _pixels(client.predict(8, 4, 1.0, api_name="/generate"))
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other_seed)
    # 4 images of 32 px: a 2 x 2 grid with 2 px of padding; its tiles are generate(4, seed=7), as 8-bit grey
    assert first.shape == (2 + 2 * 34, 2 + 2 * 34)
    expected = Generator.from_pretrained(generator_folder).generate(4, seed=7)
    for i in range(4):
        row, col = divmod(i, 2)
        tile = first[2 + 34 * row: 34 + 34 * row, 2 + 34 * col: 34 + 34 * col]
        assert np.abs(tile.astype(int) - (expected[i, 0] * 255).round().numpy().astype(int)).max() <= 1


def test_truncation_psi_changes_the_images(generator_app):
    client, _ = generator_app
    plain = _pixels(client.predict(3, 2, 1.0, api_name="/generate"))
    truncated = _pixels(client.predict(3, 2, 0.5, api_name="/generate"))
    assert plain.shape == truncated.shape and not np.array_equal(plain, truncated)


def test_random_seed_button_gives_a_seed_in_range(generator_app):
    client, _ = generator_app
    seeds = {client.predict(api_name="/random_seed") for _ in range(3)}
    assert all(isinstance(s, int) and 0 <= s < 2 ** 32 for s in seeds) and len(seeds) > 1


@pytest.mark.parametrize(("seed", "count", "psi", "message"), [
    (3.5, 4, 1.0, "seed must be a whole number"),
    ("abc", 4, 1.0, "seed must be a whole number"),
    (-1, 4, 1.0, "seed must be from 0"),
    (3, 0, 1.0, "number of images must be from 1 to 64"),
    (3, 65, 1.0, "number of images must be from 1 to 64"),
    (3, 4, 7.0, "psi must be from 0.0 to 1.0"),
    (3, 4, -0.5, "psi must be from 0.0 to 1.0"),
    (3, 4, "x", "psi must be a number"),
])
def test_bad_generator_inputs_get_a_message_in_the_page(generator_app, seed, count, psi, message):
    client, _ = generator_app
    with pytest.raises(AppError, match=message) as caught:
        client.predict(seed, count, psi, api_name="/generate")
    assert "Traceback" not in str(caught.value)


def test_generator_page_shows_the_cards_facts_and_binds_localhost(generator_app):
    _, blocks = generator_app
    config = _page_config(blocks)
    assert "stylegan2" in config and "AdaptiveMix" in config and "digits" in config and "FID 123.4" in config
    assert "Truncation psi" in config and "Random seed" in config
    assert blocks.local_url.startswith("http://127.0.0.1:")


# --------------------------------------------------------------------------------------------- classifier


def _digit_png(path):
    from sklearn.datasets import load_digits

    digit = load_digits().images[0]  # a 0, 8 x 8 in [0, 16]
    Image.fromarray((digit * 255 / 16).astype(np.uint8)).resize((24, 24)).save(path)
    return path


def _expected_top5(folder, image_path):
    """Top-5 through an independent eval preprocessing: RGB, resize the short side to size / crop_pct, centre crop,
    [0, 1], normalise (timm's eval transform)."""
    model = HubtuneForImageClassification.from_pretrained(folder).eval()
    pre = model.config.preprocessing
    size = pre["input_size"][-1]
    image = Image.open(image_path).convert("RGB")
    resize = int(size / pre["crop_pct"])
    resample = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}[pre["interpolation"]]
    image = image.resize((resize, resize), resample)
    left = int(round((resize - size) / 2.0))
    image = image.crop((left, left, left + size, left + size))
    x = torch.tensor(np.asarray(image), dtype=torch.float64).permute(2, 0, 1) / 255
    mean, std = (torch.tensor(pre[key], dtype=torch.float64)[:, None, None] for key in ("mean", "std"))
    x = (x - mean) / std
    with torch.no_grad():
        probs = model(pixel_values=x.float()[None]).logits[0].double().softmax(-1)
    top = probs.topk(5)
    return [(model.config.id2label[i], p) for p, i in zip(top.values.tolist(), top.indices.tolist())]


def test_a_digit_gives_the_top5_labels_of_the_models_eval_preprocessing(classifier_app, classifier_folder, tmp_path):
    client, _ = classifier_app
    path = _digit_png(tmp_path / "digit.png")
    labels, preview = client.predict(handle_file(str(path)), api_name="/classify")
    got = [(c["label"], c["confidence"]) for c in labels["confidences"]]
    expected = _expected_top5(classifier_folder, path)
    assert [name for name, _ in got] == [name for name, _ in expected]
    assert all(math.isclose(p, q, abs_tol=2e-3) for (_, p), (_, q) in zip(got, expected))
    assert labels["label"] == expected[0][0]
    assert Image.open(preview).size == (24, 24)


def test_bad_uploads_get_a_message_in_the_page(classifier_app, tmp_path):
    client, _ = classifier_app
    text = tmp_path / "notes.png"
    text.write_text("this is not an image")
    with pytest.raises(AppError, match="is not an image that can be read"):
        client.predict(handle_file(str(text)), api_name="/classify")
    side = math.isqrt(MAX_UPLOAD_PIXELS) + 100  # a few kB of PNG that would decode to about 41 megapixels
    huge = tmp_path / "huge.png"
    Image.new("1", (side, side)).save(huge)
    with pytest.raises(AppError, match="megapixels"):
        client.predict(handle_file(str(huge)), api_name="/classify")


def test_classifier_page_shows_the_cards_facts(classifier_app):
    _, blocks = classifier_app
    config = _page_config(blocks)
    assert "Cross-entropy" in config or "cross-entropy" in config
    assert "digits" in config and "eval_accuracy 0.875" in config and "eval_runtime" not in config


@pytest.mark.gpu
def test_the_demo_runs_on_the_gpu_when_present_and_gives_the_cpus_images(generator_folder, classifier_folder):
    from hubtune.demo.model import classify, generate_grid, load_demo_model

    gpu, cpu = load_demo_model(generator_folder), load_demo_model(generator_folder, device="cpu")
    assert gpu.device.type == "cuda" and next(gpu.model.parameters()).is_cuda
    on_gpu = np.asarray(generate_grid(gpu, 7, 4, 0.7), dtype=int)
    assert np.abs(on_gpu - np.asarray(generate_grid(cpu, 7, 4, 0.7), dtype=int)).max() <= 2
    classifier = load_demo_model(classifier_folder)
    assert classifier.device.type == "cuda" and len(classify(classifier, Image.new("RGB", (40, 40)))) == 5


def test_clearing_the_upload_empties_the_answer_without_an_error(classifier_app, tmp_path):
    client, _ = classifier_app
    labels, preview = client.predict(None, api_name="/classify")  # what the page sends when the box is cleared
    assert preview is None and not (labels or {}).get("confidences")


def test_the_page_offers_the_held_out_examples_and_says_what_the_model_expects(classifier_app, classifier_folder,
                                                                              tmp_path):
    client, blocks = classifier_app
    config = _page_config(blocks)
    index = json.loads((classifier_folder / "examples" / "examples.json").read_text())
    assert 4 <= len(index["examples"]) <= 8
    assert index["expects"] in config and "light on a dark background" in config and "32x32 px" in config
    assert all(f'"{entry["label"]}"' in config for entry in index["examples"])  # the gallery's captions
    # an example is an image the classifier answers like any upload (here the stored "3")
    entry = next(e for e in index["examples"] if e["label"] == "3")
    labels, _ = client.predict(handle_file(str(classifier_folder / entry["file"])), api_name="/classify")
    expected = _expected_top5(classifier_folder, classifier_folder / entry["file"])
    assert [c["label"] for c in labels["confidences"]] == [name for name, _ in expected]


def test_a_generator_page_offers_preset_seeds(generator_app):
    from hubtune.demo.app import EXAMPLE_SEEDS

    _, blocks = generator_app
    config = _page_config(blocks)
    assert 4 <= len(EXAMPLE_SEEDS) <= 8 and all(f"seed {s}" in config for s in EXAMPLE_SEEDS)
