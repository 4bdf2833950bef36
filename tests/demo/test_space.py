"""`hubtune push DIR ORG/NAME --space NAME`: the Space files the local Hub receives, the model card's link, the
Space's app.py started from those files (it serves the demo of the model, loaded by repo id), and the fault
handling: a failing Space push leaves the published model intact and says what was left behind."""

from __future__ import annotations

import importlib.metadata
import io
import json
import os
import re
import zipfile
from pathlib import Path
import subprocess
import sys
import time

import numpy as np
import torch
import pytest
import yaml
from demo_helpers import digest, free_port
from gradio_client import Client
from PIL import Image

import hubtune
import hubtune.demo
from hubtune.commands import main
from hubtune.demo.model import classify, load_demo_model
from hubtune.errors import ConfigError, HubPushError
from hubtune.gan import Generator
from hubtune.hub.space import check_space_files, push_model_and_space, space_files
from hubtune.hub.wheel import WHEEL_NAME


def _front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def _push(folder, repo_id, token, space, capsys):
    assert main(["push", str(folder), repo_id, "--hub_token", token, "--space", space]) == 0
    return capsys.readouterr().out.split()


def test_push_with_space_uploads_the_demo_and_links_it_from_the_card(local_hub, hub_token, hub_repo_id,
                                                                      generator_folder, capsys):
    before = digest(generator_folder)
    model_url, space_url = _push(generator_folder, hub_repo_id, hub_token, "demo", capsys)
    space_id = f"{hub_repo_id.split('/')[0]}/demo"
    assert model_url == f"{local_hub.endpoint}/{hub_repo_id}" and space_url == f"{local_hub.endpoint}/spaces/{space_id}"

    model_files = local_hub.files(hub_repo_id)
    card = model_files["README.md"].decode()
    assert f"[{space_id}]({space_url})" in card
    # one line (and a blank one) added after the title; the rest is the folder's card
    lines = card.splitlines()
    (at,) = [i for i, row in enumerate(lines) if space_url in row]
    assert lines[at - 2].startswith("# ") and lines[at - 1] == ""
    assert "\n".join(lines[:at - 1] + lines[at + 1:]).strip() == (generator_folder / "README.md").read_text().strip()
    assert model_files["model.safetensors"] == (generator_folder / "model.safetensors").read_bytes()
    assert digest(generator_folder) == before  # the local card was not touched

    raw = local_hub.files(f"spaces/{space_id}")
    assert set(raw) == {".gitattributes", "app.py", "requirements.txt", "README.md", WHEEL_NAME}
    space = {name: data.decode() for name, data in raw.items() if name != WHEEL_NAME}
    # app.py is the demo of `hubtune demo`, imported from the wheel beside it, loading the model by repo id
    assert "from hubtune.demo import launch_demo" in space["app.py"] and f'"{WHEEL_NAME}"' in space["app.py"]
    assert f'launch_demo("{hub_repo_id}")' in space["app.py"] and "gr.Blocks" not in space["app.py"]
    with zipfile.ZipFile(io.BytesIO(raw[WHEEL_NAME])) as wheel:  # the running hubtune's own code
        assert wheel.read("hubtune/demo/app.py") == Path(hubtune.demo.__file__).with_name("app.py").read_bytes()
        assert f"Version: {hubtune.__version__}" in wheel.read(f"hubtune-{hubtune.__version__}.dist-info/METADATA").decode()
    # only releases the package index has: every requirement of hubtune[demo] pinned to what runs here
    requirements = dict(line.split("==") for line in space["requirements.txt"].split())
    assert "hubtune" not in " ".join(requirements) and not any("/" in name for name in requirements)
    for package in ("torch", "torchvision", "timm", "transformers", "huggingface-hub", "accelerate", "datasets",
                    "safetensors", "gradio", "gradio_client"):
        assert requirements[package] == importlib.metadata.version(package).split("+")[0], package
    meta = _front_matter(space["README.md"])
    assert meta["sdk"] == "gradio" and meta["models"] == [hub_repo_id] and meta["app_file"] == "app.py"
    assert meta["sdk_version"] == importlib.metadata.version("gradio")
    assert meta["python_version"] == f"{sys.version_info[0]}.{sys.version_info[1]}"

    # pushing again (an existing Space) updates it in place and keeps one link in the card
    assert _push(generator_folder, hub_repo_id, hub_token, space_id, capsys) == [model_url, space_url]
    assert local_hub.files(hub_repo_id)["README.md"].decode().count(space_url) == 1


def test_the_spaces_app_py_serves_the_model_from_the_hub(local_hub, hub_token, hub_repo_id, generator_folder,
                                                         tmp_path, capsys):
    """The Space started from its own files: app.py run as the Space runs it, loading the model by repo id."""
    _push(generator_folder, hub_repo_id, hub_token, "app", capsys)
    space_id = f"{hub_repo_id.split('/')[0]}/app"
    for name, data in local_hub.files(f"spaces/{space_id}").items():
        (tmp_path / name).write_bytes(data)
    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False",
           "HF_HOME": str(tmp_path / "hf-home")}  # an empty cache: the model must come from the Hub
    process = subprocess.Popen([sys.executable, "app.py"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        client = None
        for _ in range(240):
            if process.poll() is not None:
                pytest.fail(f"app.py exited with {process.returncode}: {process.stdout.read()[-3000:]}")
            try:
                client = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=str(tmp_path / "dl"))
                break
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.5)
        assert client is not None, "app.py did not start serving within 2 minutes"
        grid = np.asarray(Image.open(client.predict(5, 2, 1.0, api_name="/generate")).convert("L"))
        expected = Generator.from_pretrained(generator_folder).generate(2, seed=5)[0, 0]
        assert np.abs(grid[2:34, 2:34].astype(int) - (expected * 255).round().numpy().astype(int)).max() <= 1
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_a_failing_space_push_leaves_the_model_intact_and_says_what_is_left(local_hub, hub_token, hub_repo_id,
                                                                             generator_folder):
    local_hub.inject_fault("space_commit", 500)
    with pytest.raises(HubPushError) as caught:
        push_model_and_space(generator_folder, hub_repo_id, "broken", token=hub_token)
    message = str(caught.value)
    space_id = f"{hub_repo_id.split('/')[0]}/broken"
    assert f"The model was published at {local_hub.endpoint}/{hub_repo_id} and is intact" in message
    assert "server error (500)" in message and "An empty Space was left behind" in message
    assert f"--space broken" in message and hub_token not in message
    model_files = local_hub.files(hub_repo_id)
    assert model_files["model.safetensors"] == (generator_folder / "model.safetensors").read_bytes()
    assert set(local_hub.files(f"spaces/{space_id}")) == {".gitattributes"}
    # the same command again publishes the Space
    push_model_and_space(generator_folder, hub_repo_id, "broken", token=hub_token)
    assert "app.py" in local_hub.files(f"spaces/{space_id}")


def test_a_bad_space_name_fails_before_any_request(local_hub, hub_token, hub_repo_id, generator_folder):
    seen = len(local_hub.routes_seen())
    with pytest.raises(ConfigError, match="not of the form 'org/name'"):
        push_model_and_space(generator_folder, hub_repo_id, "bad--name", token=hub_token)
    assert len(local_hub.routes_seen()) == seen


def test_finetune_push_to_hub_with_hub_space_publishes_the_space_too(local_hub, hub_token, hub_repo_id, tmp_path,
                                                                     capsys):
    out = tmp_path / "out"
    code = main(["finetune", "--model", "test_resnet", "--method", "ce", "--max_steps", "2", "--max_train_samples",
                 "32", "--max_eval_samples", "16", "--batch-size", "16", "--output_dir", str(out), "--disable_tqdm",
                 "true", "--push_to_hub", "--hub_model_id", hub_repo_id, "--hub_token", hub_token,
                 "--hub_space", "try-it"])
    assert code == 0, capsys.readouterr().err
    space_id = f"{hub_repo_id.split('/')[0]}/try-it"
    space_url = f"{local_hub.endpoint}/spaces/{space_id}"
    assert f"its demo Space: {space_url}" in capsys.readouterr().out
    assert f"[{space_id}]({space_url})" in local_hub.files(hub_repo_id)["README.md"].decode()
    assert space_url not in (out / "README.md").read_text()  # the local card is left as it was
    space = local_hub.files(f"spaces/{space_id}")
    assert f'launch_demo("{hub_repo_id}")' in space["app.py"].decode()
    assert _front_matter(space["README.md"].decode())["models"] == [hub_repo_id]
    # what the Space's app loads: the classifier by repo id, with its facts and labels, from the Hub
    demo = load_demo_model(hub_repo_id, token=hub_token, device="cpu")
    assert demo.kind == "classifier" and demo.facts["Data"] == "digits" and "Metrics" in demo.facts
    top = classify(demo, Image.new("RGB", (40, 30), "white"))
    assert len(top) == 5 and set(top) <= {str(i) for i in range(10)} and sum(top.values()) <= 1 + 1e-6


def test_hub_space_without_push_to_hub_is_a_one_line_error(tmp_path, capsys):
    assert main(["finetune", "--output_dir", str(tmp_path / "x"), "--hub_space", "demo"]) == 1
    err = capsys.readouterr().err
    assert "--hub_space needs --push_to_hub --hub_model_id" in err and len(err.strip().splitlines()) == 1


def test_a_space_for_a_branch_loads_that_branch():
    from hubtune.hub.space import space_files

    app = space_files("org/model", "org/demo", "http://hub.invalid", revision="v2")["app.py"]
    compile(app, "app.py", "exec")
    assert "launch_demo(\"org/model\", revision='v2')" in app
    assert 'launch_demo("org/model")\n' in space_files("org/model", "org/demo", "http://hub.invalid", "main")["app.py"]


def test_gan_push_to_hub_with_hub_space_publishes_the_space_too(local_hub, hub_token, hub_repo_id, tmp_path, capsys):
    out = tmp_path / "gan"
    code = main(["gan", "--dataset", "digits", "--arch", "dcgan", "--image_size", "16", "--max_steps", "2",
                 "--per_device_train_batch_size", "8", "--eval_num_samples", "0", "--no_progress_bar",
                 "--output_dir", str(out), "--push_to_hub",
                 "--hub_model_id", hub_repo_id, "--hub_token", hub_token, "--hub_space", "play"])
    assert code == 0, capsys.readouterr().err
    space_id = f"{hub_repo_id.split('/')[0]}/play"
    space_url = f"{local_hub.endpoint}/spaces/{space_id}"
    assert f"its demo Space: {space_url}" in capsys.readouterr().out
    model_files = local_hub.files(hub_repo_id)
    assert f"[{space_id}]({space_url})" in model_files["README.md"].decode()
    assert not any(name.startswith("checkpoint-") or name.startswith(".hubtune") for name in model_files)
    space = local_hub.files(f"spaces/{space_id}")
    assert f'launch_demo("{hub_repo_id}")' in space["app.py"].decode()
    assert _front_matter(space["README.md"].decode())["models"] == [hub_repo_id]
    demo = load_demo_model(hub_repo_id, token=hub_token, device="cpu")
    assert demo.kind == "generator"
    local = Generator.from_pretrained(str(out))
    assert torch.equal(demo.model.generate(2, seed=4), local.generate(2, seed=4))


def test_gan_hub_space_without_push_to_hub_is_a_one_line_error(tmp_path, capsys):
    assert main(["gan", "--output_dir", str(tmp_path / "x"), "--hub_space", "demo"]) == 1
    err = capsys.readouterr().err
    assert "hub_space needs push_to_hub and hub_model_id" in err and len(err.strip().splitlines()) == 1


# --------------------------------------------------------------------------------------------- what the Space holds


class _Installed:
    """A stand-in for an installed distribution: another version, or installed from a version-control URL."""

    def __init__(self, dist, version=None, direct_url=None):
        self._dist, self.version, self._direct_url = dist, version or dist.version, direct_url

    def read_text(self, name):
        return self._direct_url if name == "direct_url.json" else self._dist.read_text(name)


def _installed_as(monkeypatch, package, **changes):
    import hubtune.hub.wheel as wheel

    real = importlib.metadata.distribution

    def distribution(name):
        if name.lower() == package and changes.get("missing"):
            raise importlib.metadata.PackageNotFoundError(name)
        dist = real(name)
        return _Installed(dist, changes.get("version"), changes.get("direct_url")) if name.lower() == package else dist

    monkeypatch.setattr(wheel.metadata, "distribution", distribution)


@pytest.mark.parametrize("package, changes, message", [
    ("timm", {"direct_url": '{"url": "https://github.com/huggingface/pytorch-image-models.git", "vcs_info": {}}'},
     "would pin timm==1.0.31, but that was installed from https://github.com/huggingface/pytorch-image-models.git"),
    ("gradio", {"missing": True}, "would need gradio, which is not installed here"),
])
def test_a_requirement_the_index_may_not_have_stops_the_push_before_any_request(
        local_hub, hub_token, hub_repo_id, generator_folder, monkeypatch, capsys, package, changes, message):
    _installed_as(monkeypatch, package, **changes)
    seen = len(local_hub.routes_seen())
    assert main(["push", str(generator_folder), hub_repo_id, "--hub_token", hub_token, "--space", "demo"]) == 1
    err = capsys.readouterr().err
    assert message.replace("1.0.31", importlib.metadata.version("timm")) in err
    assert "Nothing was uploaded" in err and len(err.strip().splitlines()) == 1
    assert len(local_hub.routes_seen()) == seen  # neither the model nor the Space was sent


def test_a_local_version_label_is_pinned_as_the_release_the_index_has(monkeypatch):
    _installed_as(monkeypatch, "torch", version="2.14.1+cpu")
    requirements = space_files("org/model", "org/demo", "http://hub.invalid")["requirements.txt"].split()
    assert "torch==2.14.1" in requirements


@pytest.mark.parametrize("change, message", [
    (lambda f: f.update({"requirements.txt": f"./{WHEEL_NAME}[demo]\n" + f["requirements.txt"]}),
     "is not a release pinned as NAME==VERSION"),
    (lambda f: f.update({"requirements.txt": f["requirements.txt"].replace("torch==", "torch>=")}),
     "'torch>="),
    (lambda f: f.update({"requirements.txt": "\n".join(line for line in f["requirements.txt"].splitlines()
                                                       if not line.startswith("datasets=="))}),
     "does not pin datasets, which hubtune[demo] needs"),
    (lambda f: f.pop(WHEEL_NAME), f"The Space would lack {WHEEL_NAME}"),
    (lambda f: f.update({WHEEL_NAME: b"not a zip"}), "is not a wheel of hubtune"),
    (lambda f: f.update({"app.py": "from hubtune.demo import launch_demo"}), "does not import hubtune from"),
])
def test_space_files_that_would_not_build_are_refused_in_one_line(change, message):
    files = space_files("org/model", "org/demo", "http://hub.invalid")
    check_space_files(files)
    change(files)
    with pytest.raises(HubPushError, match=re.escape(message)) as caught:
        check_space_files(files)
    assert "\n" not in str(caught.value)


def test_the_wheel_is_the_same_bytes_for_the_same_code():
    from hubtune.hub.wheel import hubtune_wheel

    assert hubtune_wheel() == hubtune_wheel()


def test_the_wheel_carries_the_requirements_of_an_egg_info_install_too():
    """An editable install seen from the source tree is an egg-info folder: PKG-INFO, no METADATA. Its requirements
    must still reach the wheel, or the check that requirements.txt pins them all has nothing to check."""
    from hubtune.hub.wheel import _metadata_text

    class EggInfo:
        def read_text(self, name):
            return {"PKG-INFO": 'Metadata-Version: 2.1\nName: hubtune\nVersion: 0.0.1\n'
                                'Requires-Dist: datasets>=2; extra == "demo"\n'}.get(name)

    text = _metadata_text(EggInfo())
    assert f"Version: {hubtune.__version__}" in text and 'Requires-Dist: datasets>=2; extra == "demo"' in text


def test_pip_accepts_the_wheel_and_it_installs_the_hubtune_command(tmp_path):
    """The wheel is a valid one for pip (a visitor who clones the Space can `pip install` it)."""
    from hubtune.hub.wheel import hubtune_wheel

    name, data = hubtune_wheel()
    (tmp_path / name).write_bytes(data)
    # --ignore-installed: where hubtune is already installed (CI's venv) pip would otherwise plan no install at all
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--no-index",
                           "--ignore-installed", "--report", str(tmp_path / "report.json"), str(tmp_path / name)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (item,) = json.loads((tmp_path / "report.json").read_text())["install"]
    assert item["metadata"]["name"] == "hubtune" and item["metadata"]["version"] == hubtune.__version__
    with zipfile.ZipFile(tmp_path / name) as wheel:
        assert "hubtune = hubtune.commands:main" in wheel.read(f"hubtune-{hubtune.__version__}.dist-info/"
                                                               "entry_points.txt").decode()
        assert "hubtune/model_cards/classifier.md" in wheel.namelist()
