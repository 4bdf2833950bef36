"""Helpers of the demo tests: a folder's file digests, a free local port, waiting for a served page, headless
Chromium, and the visitor's steps on a classifier page."""

from __future__ import annotations

import contextlib
import hashlib
import socket
import time
import urllib.request
from pathlib import Path


def digest(folder):
    """Every file under ``folder`` with its SHA-256 (what the demo must never change)."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------------------------- a served page, a browser

CHROMIUM = Path("/usr/bin/chromium")
# as root, in a closed network: no sandbox, and none of Chromium's background connections
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def wait_until_served(process, url: str, what: str, tries: int = 240) -> None:
    """Wait (up to ``tries`` half-seconds) until ``url`` answers; fail with the process's output if it exits."""
    import pytest

    for _ in range(tries):
        if process.poll() is not None:
            pytest.fail(f"{what} exited with {process.returncode}: {process.stdout.read()[-3000:]}")
        try:
            urllib.request.urlopen(url, timeout=5).close()
            return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"{what} did not serve its page within {tries // 2} s")


@contextlib.contextmanager
def chromium_page(tmp_path, width: int = 1200, height: int = 900):
    """A page of headless Debian Chromium driven by Playwright (no browser download: /usr/bin/chromium)."""
    import pytest

    sync_api = pytest.importorskip("playwright.sync_api", reason="the test extra installs playwright")
    profile = tmp_path / "chromium-profile"
    profile.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": width, "height": height})
        try:
            yield context.new_page()
        finally:
            context.close()


def click_an_example_then_clear(page, url: str, example: int = 3) -> str:
    """On a classifier's demo page: click the held-out example ``example``, wait for its top-5, clear the upload box
    and check that clearing empties the answer without an error; returns the top-5 text shown for the example."""
    page.goto(url, wait_until="domcontentloaded", timeout=60_000)
    page.locator("#examples button.thumbnail-item").nth(example).click(timeout=60_000)
    page.locator("#preview img").wait_for(state="visible", timeout=60_000)
    page.wait_for_function("() => document.querySelectorAll('#labels .confidence-set, #labels dd, "
                           "#labels [data-testid=\"label-output-value\"]').length >= 1 || "
                           "/\\d+%/.test(document.querySelector('#labels').innerText)", timeout=60_000)
    shown = page.locator("#labels").inner_text()
    page.locator("#upload button[aria-label='Clear']").click()
    page.locator("#preview img").wait_for(state="detached", timeout=60_000)
    page.wait_for_timeout(1000)  # an error toast would have shown by now
    assert page.locator(".toast-body.error").count() == 0 and page.get_by_text("Error", exact=True).count() == 0
    assert "%" not in page.locator("#labels").inner_text()  # the answer went with the image
    return shown
