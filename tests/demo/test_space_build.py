"""The Spaces that `hubtune finetune --push_to_hub --hub_space` and `hubtune gan --push_to_hub --hub_space` publish
build on a fresh machine from their own files and the package index alone, as a Gradio Space builds them.

A Space's build (its Dockerfile) installs requirements.txt alone, `pip install -r /tmp/requirements.txt` in an empty
working directory, and copies the repository's other files in afterwards. So does this test: a new virtual
environment from the base interpreter (no hubtune in it, none of this checkout importable: PYTHONPATH unset),
`pip install -r requirements.txt` from a folder holding nothing else, then the Space's files in another empty folder
and `python app.py`, against the local test Hub. Then one prediction (classifier) and one grid (generator) through
gradio_client, and headless Chromium clicks an example, clears the box, and clicks a preset seed.

Slow (a fresh environment of about 6 GB: 2-4 minutes on 2 cores), so it is marked `space_build`: the README's
`pytest -q` leaves it out (setup.cfg), and `.ci/run` runs it as its own step, `pytest -q -m space_build`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from demo_helpers import CHROMIUM, chromium_page, click_an_example_then_clear, free_port, wait_until_served
from gradio_client import Client, handle_file
from PIL import Image

from hubtune.commands import main

pytestmark = [pytest.mark.space_build, pytest.mark.usefixtures("fresh_accelerate_state")]


def _clean_env(**extra: str) -> dict[str, str]:
    """This environment without anything that would import hubtune from here (PYTHONPATH, the test venv)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(sys.prefix))
    return {**env, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "GRADIO_ANALYTICS_ENABLED": "False", **extra}


@pytest.fixture(scope="module")
def space_python(tmp_path_factory):
    """The interpreter of a new virtual environment made from the base Python (removed afterwards: about 6 GB)."""
    root = tmp_path_factory.mktemp("space-venv")
    base = Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    subprocess.run([str(base if base.exists() else sys.executable), "-m", "venv", str(root / "venv")], check=True,
                   cwd=root, env=_clean_env(), timeout=300)
    yield root / "venv" / "bin" / "python"
    shutil.rmtree(root, ignore_errors=True)


def _published_space(local_hub, space_id: str, folder: Path) -> Path:
    folder.mkdir()
    for name, data in local_hub.files(f"spaces/{space_id}").items():
        (folder / name).write_bytes(data)
    return folder


def _build(python: Path, space: Path, build_dir: Path) -> float:
    """`pip install -r requirements.txt` as a Space builds: requirements.txt alone in an empty folder; seconds."""
    build_dir.mkdir()
    shutil.copy(space / "requirements.txt", build_dir / "requirements.txt")
    started = time.perf_counter()
    proc = subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", "requirements.txt"], cwd=build_dir,
                          env=_clean_env(), capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, f"pip install -r requirements.txt failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
    # no hubtune from anywhere but the Space's own wheel
    probe = subprocess.run([str(python), "-c", "import hubtune"], cwd=build_dir, env=_clean_env(),
                           capture_output=True, text=True)
    assert probe.returncode != 0 and "No module named 'hubtune'" in probe.stderr
    return time.perf_counter() - started


def _start(python: Path, space: Path, tmp_path: Path):
    port = free_port()
    env = _clean_env(GRADIO_SERVER_PORT=str(port), HF_HOME=str(tmp_path / f"hf-home-{port}"))  # an empty cache
    process = subprocess.Popen([str(python), "app.py"], cwd=space, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    wait_until_served(process, url, f"{space.name}/app.py")
    return process, url


def _stop(process) -> None:
    process.terminate()
    process.wait(timeout=30)


def test_the_published_spaces_build_from_their_own_files_and_serve_the_models(
        local_hub, hub_token, hub_repo_id, space_python, tmp_path, capsys):
    owner = hub_repo_id.split("/")[0]
    classifier_repo, generator_repo = f"{hub_repo_id}-cls", f"{hub_repo_id}-gan"
    assert main(["finetune", "--model", "test_resnet", "--method", "ce", "--max_steps", "2", "--max_train_samples",
                 "32", "--max_eval_samples", "24", "--batch-size", "16", "--output_dir", str(tmp_path / "cls"),
                 "--disable_tqdm", "true", "--push_to_hub", "--hub_model_id", classifier_repo, "--hub_token",
                 hub_token, "--hub_space", "cls-demo"]) == 0, capsys.readouterr().err
    assert main(["gan", "--dataset", "digits", "--arch", "dcgan", "--image_size", "16", "--max_steps", "2",
                 "--per_device_train_batch_size", "8", "--eval_num_samples", "0", "--no_progress_bar",
                 "--output_dir", str(tmp_path / "gan"), "--push_to_hub", "--hub_model_id", generator_repo,
                 "--hub_token", hub_token, "--hub_space", "gan-demo"]) == 0, capsys.readouterr().err

    classifier_space = _published_space(local_hub, f"{owner}/cls-demo", tmp_path / "cls-space")
    generator_space = _published_space(local_hub, f"{owner}/gan-demo", tmp_path / "gan-space")
    seconds = _build(space_python, classifier_space, tmp_path / "build-cls")
    _build(space_python, generator_space, tmp_path / "build-gan")  # resolves too (installed: nothing new)
    print(f"\nThe Space's requirements installed into a new environment in {seconds:.0f} s")

    process, url = _start(space_python, classifier_space, tmp_path)
    try:
        example = tmp_path / "cls" / "examples" / "03-3.png"
        client = Client(url, verbose=False, download_files=str(tmp_path / "dl"))
        labels, _ = client.predict(handle_file(str(example)), api_name="/classify")
        from hubtune.demo.model import classify, load_demo_model  # the same answer as `hubtune demo` here

        expected = classify(load_demo_model(classifier_repo, device="cpu"), Image.open(example))
        assert [c["label"] for c in labels["confidences"]] == list(expected)
        assert np.allclose([c["confidence"] for c in labels["confidences"]], list(expected.values()), atol=2e-3)
        if CHROMIUM.exists():
            with chromium_page(tmp_path / "browser-cls") as page:
                click_an_example_then_clear(page, url, example=3)
    finally:
        _stop(process)

    process, url = _start(space_python, generator_space, tmp_path)
    try:
        from hubtune.gan import Generator

        client = Client(url, verbose=False, download_files=str(tmp_path / "dl"))
        grid = np.asarray(Image.open(client.predict(5, 2, 1.0, api_name="/generate")).convert("L"))
        expected = Generator.from_pretrained(str(tmp_path / "gan")).generate(2, seed=5)[0, 0]  # the first image
        assert np.abs(grid[2:18, 2:18].astype(int) - (expected * 255).round().numpy().astype(int)).max() <= 1
        if CHROMIUM.exists():
            with chromium_page(tmp_path / "browser-gan") as page:
                page.goto(url, wait_until="domcontentloaded", timeout=60_000)
                page.get_by_text("seed 2", exact=True).click(timeout=60_000)
                page.locator("#grid img").wait_for(state="visible", timeout=60_000)
                assert "Traceback" not in page.content()
    finally:
        _stop(process)
