"""`hubtune demo` in a real browser: headless Chromium (Debian's `chromium` package, driven by Playwright) opens
the page that the command serves, moves the seed, presses Generate, waits for the grid and saves a screenshot.

Needs /usr/bin/chromium (`apt-get install -y chromium`; `.ci/run` installs it); skipped, saying so, without it.
Set HUBTUNE_DEMO_SCREENSHOT=PATH to keep the screenshot (docs/demo-generator.png is made that way, see README).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from demo_helpers import digest, free_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="needs Debian's chromium at /usr/bin/chromium (apt-get install -y chromium)")


@pytest.fixture
def served_demo(tmp_path):
    """The page of ``hubtune demo MODEL`` (MODEL: $HUBTUNE_DEMO_MODEL or a tiny StyleGAN2), started as a user does."""
    model = os.environ.get("HUBTUNE_DEMO_MODEL")
    if model is None:
        from hubtune.gan import StyleGAN2Generator
        import torch

        torch.manual_seed(0)
        model = tmp_path / "gan"
        StyleGAN2Generator(image_size=32, channels=1, latent_dim=16, w_dim=16, mapping_layers=2, channel_base=256,
                           channel_max=16).save_pretrained(model)
    folder = Path(model).resolve() if Path(model).is_dir() else None
    before = digest(folder) if folder else None
    port = free_port()
    # run from inside the model folder: nothing may be written there, not even Gradio's working files
    process = subprocess.Popen([sys.executable, "-m", "hubtune", "demo", str(folder or model), "--port", str(port),
                                "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               cwd=folder, env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(240):
            if process.poll() is not None:
                pytest.fail(f"hubtune demo exited with {process.returncode}: {process.stdout.read()[-3000:]}")
            try:
                urllib.request.urlopen(url, timeout=5).close()
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("hubtune demo did not serve its page within 2 minutes")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
    if folder is not None:
        assert digest(folder) == before


def test_chromium_moves_the_seed_generates_and_takes_a_screenshot(served_demo, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="the test extra installs playwright")
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1200, "height": 760})
        try:
            page = context.new_page()
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
        finally:
            context.close()
    assert shot.stat().st_size > 10_000
    keep = os.environ.get("HUBTUNE_DEMO_SCREENSHOT")
    if keep:
        shutil.copyfile(shot, keep)
