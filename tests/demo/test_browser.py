"""`hubtune demo` in a real browser: headless Chromium (Debian's `chromium` package, driven by Playwright) opens
the page that the command serves. A generator: move the seed, press Generate, wait for the grid, save a screenshot,
click a preset seed. A classifier: click a held-out example, see its top-5, clear the box (no error), upload a file
that is not an image (a message).

Needs /usr/bin/chromium (`apt-get install -y chromium`; `.ci/run` installs it); skipped, saying so, without it.
Set HUBTUNE_DEMO_SCREENSHOT=PATH to keep the screenshot (docs/demo-generator.png is made that way, see README).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from demo_helpers import CHROMIUM, chromium_page, click_an_example_then_clear, digest, free_port, wait_until_served

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="needs Debian's chromium at /usr/bin/chromium (apt-get install -y chromium)")


@contextlib.contextmanager
def _served(model):
    """The page of ``hubtune demo MODEL``, started as a user does, from inside the model folder: nothing may be
    written there, not even Gradio's working files."""
    folder = Path(model).resolve() if Path(model).is_dir() else None
    before = digest(folder) if folder else None
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "hubtune", "demo", str(folder or model), "--port", str(port),
                                "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               cwd=folder, env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_served(process, url, "hubtune demo")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
    if folder is not None:
        assert digest(folder) == before


@pytest.fixture
def served_demo(tmp_path):
    """The page of ``hubtune demo MODEL`` (MODEL: $HUBTUNE_DEMO_MODEL or a tiny StyleGAN2)."""
    model = os.environ.get("HUBTUNE_DEMO_MODEL")
    if model is None:
        from hubtune.gan import StyleGAN2Generator
        import torch

        torch.manual_seed(0)
        model = tmp_path / "gan"
        StyleGAN2Generator(image_size=32, channels=1, latent_dim=16, w_dim=16, mapping_layers=2, channel_base=256,
                           channel_max=16).save_pretrained(model)
    with _served(model) as url:
        yield url


def test_chromium_moves_the_seed_generates_and_takes_a_screenshot(served_demo, tmp_path):
    with chromium_page(tmp_path, height=760) as page:
        page.goto(served_demo, wait_until="domcontentloaded", timeout=60_000)
        page.get_by_text("Random seed").wait_for(timeout=60_000)
        seed = page.locator("#seed input")
        seed.fill("42")
        seed.press("Tab")
        page.locator("#generate").click()
        grid = page.locator("#grid img")
        grid.wait_for(state="visible", timeout=60_000)
        first = grid.get_attribute("src")
        assert first and ("image.png" in first or first.startswith("data:image/png"))

        seed.fill("43")  # another seed: another grid
        seed.press("Tab")
        page.locator("#generate").click()
        page.wait_for_function("(old) => { const img = document.querySelector('#grid img');"
                               " return img && img.src !== old; }", arg=first, timeout=60_000)

        page.wait_for_load_state("networkidle")
        page.wait_for_timeout(1000)  # the grid's fade-in after loading
        shot = tmp_path / "demo-generator.png"
        page.screenshot(path=str(shot), full_page=True)

        seed.fill("3.5")  # a bad seed: a message in the page, no traceback
        seed.press("Tab")
        page.locator("#generate").click()
        page.get_by_text("The seed must be a whole number").first.wait_for(timeout=60_000)
        assert "Traceback" not in page.content()

        page.get_by_text("seed 2", exact=True).click()  # a preset seed: its grid at once
        page.wait_for_function("(old) => { const img = document.querySelector('#grid img');"
                               " return img && img.src !== old; }", arg=grid.get_attribute("src"),
                               timeout=60_000)
        assert page.locator("#seed input").input_value() == "2"
    assert shot.stat().st_size > 10_000
    keep = os.environ.get("HUBTUNE_DEMO_SCREENSHOT")
    if keep:
        shutil.copyfile(shot, keep)


def test_chromium_clicks_an_example_clears_the_box_and_uploads_a_bad_file(classifier_folder, tmp_path):
    index = json.loads((classifier_folder / "examples" / "examples.json").read_text())
    with _served(classifier_folder) as url, chromium_page(tmp_path) as page:
        shown = click_an_example_then_clear(page, url, example=3)
        assert len(re.findall(r"\d+%", shown)) == 5  # the top-5 of the example image
        assert page.get_by_text(index["expects"]).count() == 1  # the line on what the model expects
        text = tmp_path / "notes.png"
        text.write_text("this is not an image")
        page.locator("#upload input[type=file]").set_input_files(str(text))
        page.get_by_text("is not an image that can be read").first.wait_for(timeout=60_000)
        assert "Traceback" not in page.content()
