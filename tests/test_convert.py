"""hubtune.convert and ``hubtune convert``: MoCo v1/v2/v3 and torchvision checkpoints -> a timm local-dir folder.

The checkpoints are synthetic, in the exact layouts of the published files, built from a small timm ResNet
(``resnet10t``: torchvision-style ResNet keys, as timm's ``resnet50`` has).
"""

from __future__ import annotations

import json

import pytest
import timm
import torch

from hubtune.backbones import create_backbone
from hubtune.commands import main
from hubtune.convert import convert_checkpoint, detect_source_format
from hubtune.errors import ConfigError, HubtuneError, ModelFileError, OutputDirError, WeightsFileError

ARCH = "resnet10t"


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    model = timm.create_model(ARCH, pretrained=False, num_classes=0).eval()
    # non-trivial BatchNorm statistics, so that a mix-up of buffers would show in the features
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if name.endswith("running_mean"):
                buffer.normal_(0, 0.1)
            elif name.endswith("running_var"):
                buffer.uniform_(0.5, 1.5)
    return model


@pytest.fixture(scope="module")
def images():
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def _prefixed(state, prefix):
    return {prefix + k: v.clone() for k, v in state.items()}


def moco_v2_checkpoint(encoder, path):
    """``main_moco.py``'s layout: DataParallel prefix, query and key encoders with an MLP head, the queue."""
    state = _prefixed(encoder.state_dict(), "module.encoder_q.")
    state.update({"module.encoder_q.fc.0.weight": torch.randn(512, 512), "module.encoder_q.fc.0.bias": torch.randn(512),
                  "module.encoder_q.fc.2.weight": torch.randn(128, 512), "module.encoder_q.fc.2.bias": torch.randn(128)})
    state.update({k.replace("encoder_q", "encoder_k"): torch.randn_like(v) if v.is_floating_point() else v
                  for k, v in state.items()})
    state["module.queue"] = torch.randn(128, 64)
    state["module.queue_ptr"] = torch.zeros(1, dtype=torch.long)
    torch.save({"epoch": 1, "arch": "resnet50", "state_dict": state,
                "optimizer": {"state": {}, "param_groups": [{"lr": 0.03, "momentum": 0.9, "params": [0, 1]}]}}, path)
    return path


def mocov3_checkpoint(encoder, path):
    """MoCo v3's layout: base and momentum encoders with a projection MLP under ``fc``, and a predictor."""
    state = _prefixed(encoder.state_dict(), "module.base_encoder.")
    head = {"fc.0.weight": torch.randn(64, 512), "fc.1.weight": torch.ones(64), "fc.1.bias": torch.zeros(64),
            "fc.1.running_mean": torch.zeros(64), "fc.1.running_var": torch.ones(64),
            "fc.1.num_batches_tracked": torch.tensor(3), "fc.3.weight": torch.randn(32, 64)}
    state.update(_prefixed(head, "module.base_encoder."))
    state.update({k.replace("base_encoder", "momentum_encoder"): torch.randn_like(v) if v.is_floating_point() else v
                  for k, v in state.items()})
    state.update({"module.predictor.0.weight": torch.randn(64, 32), "module.predictor.3.weight": torch.randn(32, 64)})
    torch.save({"epoch": 100, "arch": "resnet50", "state_dict": state, "scaler": {"scale": 1024.0}}, path)
    return path


def _features(model, images):
    with torch.no_grad():
        return model.eval()(images)


def _assert_same_features(folder, encoder, images):
    expected = _features(encoder, images)
    loaded = timm.create_model(f"local-dir:{folder}", pretrained=True, num_classes=0)
    torch.testing.assert_close(_features(loaded, images), expected, rtol=0, atol=0)
    backbone = create_backbone(f"local-dir:{folder}", pretrained=True)
    torch.testing.assert_close(_features(backbone, images), expected, rtol=0, atol=0)
    assert backbone.spec["architecture"] == ARCH and backbone.num_features == encoder.num_features


def test_moco_v2_checkpoint_converts_to_a_folder_with_the_encoders_features(encoder, images, tmp_path):
    checkpoint = moco_v2_checkpoint(encoder, tmp_path / "moco_v2_200ep_pretrain.pth.tar")
    folder = convert_checkpoint(checkpoint, tmp_path / "out", architecture=ARCH)
    assert folder == (tmp_path / "out").resolve()
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]  # no pickle written
    _assert_same_features(folder, encoder, images)
    text = (folder / "config.json").read_text()
    assert str(tmp_path) not in text  # the source is recorded by file name only
    config = json.loads(text)
    assert config["architecture"] == ARCH and config["num_classes"] == 0
    assert "num_classes" not in config.get("model_args", {})
    assert config["pretrained_cfg"]["mean"] == [0.485, 0.456, 0.406]
    assert config["pretrained_cfg"]["std"] == [0.229, 0.224, 0.225]
    assert "hf_hub_id" not in config["pretrained_cfg"] and "license" not in config["pretrained_cfg"]
    record = config["hubtune_conversion"]
    assert record["source_file"] == "moco_v2_200ep_pretrain.pth.tar" and record["source_format"] == "moco"
    assert record["dropped_keys"] == ["fc.0.bias", "fc.0.weight", "fc.2.bias", "fc.2.weight"]


def test_moco_v3_checkpoint_drops_the_projection_mlp_and_ignores_momentum_encoder_and_predictor(
        encoder, images, tmp_path):
    checkpoint = mocov3_checkpoint(encoder, tmp_path / "r-50-100ep.pth.tar")
    for source_format in ("auto", "mocov3"):
        folder = convert_checkpoint(checkpoint, tmp_path / source_format, architecture=ARCH, source_format=source_format)
        _assert_same_features(folder, encoder, images)
        assert json.loads((folder / "config.json").read_text())["hubtune_conversion"]["source_format"] == "mocov3"


@pytest.mark.parametrize("prefix", ["", "module."])
def test_torchvision_state_dict_converts_and_its_classifier_is_dropped(encoder, images, tmp_path, prefix):
    state = dict(encoder.state_dict())
    state.update({"fc.weight": torch.randn(10, 512), "fc.bias": torch.randn(10)})
    torch.save(_prefixed(state, prefix), tmp_path / "resnet.pth")
    folder = convert_checkpoint(tmp_path / "resnet.pth", tmp_path / "out", architecture=ARCH)
    _assert_same_features(folder, encoder, images)
    record = json.loads((folder / "config.json").read_text())["hubtune_conversion"]
    assert record["source_format"] == "torchvision" and record["dropped_keys"] == ["fc.bias", "fc.weight"]


def test_checkpoints_without_batchnorm_counters_still_convert(encoder, images, tmp_path):
    state = {k: v for k, v in encoder.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save({"state_dict": _prefixed(state, "module.encoder_q.")}, tmp_path / "old.pth.tar")
    _assert_same_features(convert_checkpoint(tmp_path / "old.pth.tar", tmp_path / "out", architecture=ARCH),
                          encoder, images)


def test_source_format_is_detected_from_the_keys():
    assert detect_source_format(["module.encoder_q.conv1.weight", "module.queue"]) == "moco"
    assert detect_source_format(["encoder_q.conv1.weight"]) == "moco"
    assert detect_source_format(["module.base_encoder.conv1.weight"]) == "mocov3"
    assert detect_source_format(["conv1.weight", "fc.weight"]) == "torchvision"


def test_a_checkpoint_of_another_architecture_is_refused_naming_keys(encoder, tmp_path):
    checkpoint = moco_v2_checkpoint(encoder, tmp_path / "moco.pth.tar")
    with pytest.raises(ConfigError) as info:
        convert_checkpoint(checkpoint, tmp_path / "out", architecture="resnet18")
    message = str(info.value)
    assert "'resnet18'" in message and "moco.pth.tar" in message and "--architecture" in message
    assert "missing key(s)" in message or "unexpected key(s)" in message
    assert "layer1.0" in message or "conv1" in message  # names some keys
    assert "arch='resnet50'" in message  # what the checkpoint says about itself
    assert not (tmp_path / "out").exists()


def test_a_wrong_source_format_or_unknown_architecture_is_a_config_error(encoder, tmp_path):
    checkpoint = moco_v2_checkpoint(encoder, tmp_path / "moco.pth.tar")
    with pytest.raises(ConfigError, match="No encoder weights found.*source_format"):
        convert_checkpoint(checkpoint, tmp_path / "a", architecture=ARCH, source_format="mocov3")
    with pytest.raises(ConfigError, match="source_format must be one of"):
        convert_checkpoint(checkpoint, tmp_path / "b", architecture=ARCH, source_format="simclr")
    with pytest.raises(ConfigError, match="Unknown timm architecture 'resnet5000'"):
        convert_checkpoint(checkpoint, tmp_path / "c", architecture="resnet5000")


class _NotAWeight:
    """A Python object in a checkpoint: loading it needs full unpickling, which would run code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))  # executed by a full unpickle, never by weights_only


def test_a_checkpoint_that_needs_full_unpickling_is_refused_without_running_it(encoder, tmp_path):
    marker = tmp_path / "code_ran"
    state = _prefixed(encoder.state_dict(), "module.encoder_q.")
    torch.save({"state_dict": state, "args": _NotAWeight(marker)}, tmp_path / "pickled.pth.tar")
    with pytest.raises(WeightsFileError, match="needs full unpickling.*weights_only=True"):
        convert_checkpoint(tmp_path / "pickled.pth.tar", tmp_path / "out", architecture=ARCH)
    assert not marker.exists()


def test_missing_and_broken_files_are_clear_errors(encoder, tmp_path):
    with pytest.raises(ModelFileError, match="does not exist"):
        convert_checkpoint(tmp_path / "nope.pth.tar", tmp_path / "out")
    checkpoint = moco_v2_checkpoint(encoder, tmp_path / "moco.pth.tar")
    (tmp_path / "truncated.pth.tar").write_bytes(checkpoint.read_bytes()[:5000])
    with pytest.raises(WeightsFileError, match="cannot be read"):
        convert_checkpoint(tmp_path / "truncated.pth.tar", tmp_path / "out")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(WeightsFileError, match="not a state dict"):
        convert_checkpoint(tmp_path / "list.pth", tmp_path / "out")


@pytest.mark.parametrize("content", [bytes(range(256)) * 64, b"<html>404 Not Found</html>", b""])
def test_a_file_that_is_not_a_checkpoint_is_named_as_such(tmp_path, capsys, content):
    path = tmp_path / "model.pth.tar"
    path.write_bytes(content)
    with pytest.raises(WeightsFileError, match="is not a checkpoint: it is neither a PyTorch zip file"):
        convert_checkpoint(path, tmp_path / "out")
    assert main(["convert", str(path), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is not a checkpoint" in err and "Python objects" not in err
    assert not (tmp_path / "out").exists()


def test_an_existing_model_folder_is_only_replaced_with_overwrite(encoder, images, tmp_path):
    checkpoint = moco_v2_checkpoint(encoder, tmp_path / "moco.pth.tar")
    convert_checkpoint(checkpoint, tmp_path / "out", architecture=ARCH)
    with pytest.raises(OutputDirError, match="--overwrite"):
        convert_checkpoint(checkpoint, tmp_path / "out", architecture=ARCH)
    _assert_same_features(convert_checkpoint(checkpoint, tmp_path / "out", architecture=ARCH, overwrite=True),
                          encoder, images)


def test_every_error_is_a_hubtune_error():
    assert all(issubclass(e, HubtuneError) for e in (ConfigError, ModelFileError, OutputDirError, WeightsFileError))


# ------------------------------------------------------------------------------------------- command line


def test_command_with_two_positionals_writes_the_folder_and_prints_the_backbone(encoder, images, tmp_path, capsys):
    checkpoint = moco_v2_checkpoint(encoder, tmp_path / "moco.pth.tar")
    assert main(["convert", str(checkpoint), str(tmp_path / "out"), "--architecture", ARCH]) == 0
    out = capsys.readouterr().out
    folder = (tmp_path / "out").resolve()
    assert f"local-dir:{folder}" in out
    _assert_same_features(folder, encoder, images)


def test_command_with_flags_and_a_config_file(encoder, images, tmp_path, capsys):
    checkpoint = mocov3_checkpoint(encoder, tmp_path / "v3.pth.tar")
    argv = ["convert", "--checkpoint", str(checkpoint), "--output_dir", str(tmp_path / "a"), "--architecture", ARCH,
            "--source_format", "mocov3"]
    assert main(argv) == 0
    _assert_same_features(tmp_path / "a", encoder, images)
    config = tmp_path / "convert.json"
    config.write_text(json.dumps({"checkpoint": str(checkpoint), "output_dir": str(tmp_path / "b"), "architecture": ARCH}))
    assert main(["convert", str(config)]) == 0
    _assert_same_features(tmp_path / "b", encoder, images)


def test_command_errors_are_one_line_with_exit_code_1(encoder, tmp_path, capsys):
    assert main(["convert", str(tmp_path / "missing.pth.tar"), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("hubtune convert: error:") and "missing.pth.tar" in err and "does not exist" in err
    assert len(err.splitlines()) == 1
    checkpoint = moco_v2_checkpoint(encoder, tmp_path / "moco.pth.tar")
    assert main(["convert", str(checkpoint), str(tmp_path / "out"), "--architecture", "resnet18"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and ("missing key(s)" in err or "unexpected key(s)" in err)
    assert main(["convert", str(checkpoint)]) == 1
    assert "output folder" in capsys.readouterr().err


def test_a_checkpoint_with_nan_tensors_is_refused_and_nothing_is_written(encoder, images, tmp_path, capsys):
    """Issue 17: a checkpoint whose tensors are NaN converted to a backbone, exit 0. Now: refused, counted, named."""
    import hashlib

    broken = timm.create_model(ARCH, pretrained=False, num_classes=0)
    broken.load_state_dict(encoder.state_dict())
    with torch.no_grad():
        for name, param in broken.named_parameters():
            if name.startswith("layer"):
                param.fill_(float("nan"))
        broken.conv1[0].weight[0, 0, 0, 0] = float("inf")
    checkpoint = moco_v2_checkpoint(broken, tmp_path / "diverged.pth.tar")
    assert main(["convert", str(checkpoint), str(tmp_path / "out"), "--architecture", ARCH]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("hubtune convert: error:")
    n_bad = sum(1 for name, _ in broken.named_parameters() if name.startswith("layer")) + 1
    n_float = sum(1 for v in encoder.state_dict().values() if v.is_floating_point())
    assert f"{n_bad} of {n_float} weight tensor(s) hold NaN or inf" in err and "diverged.pth.tar" in err
    assert "conv1.0.weight" in err and "nothing was written" in err
    assert not (tmp_path / "out").exists()
    # --overwrite does not replace a good folder with the broken one
    good = convert_checkpoint(moco_v2_checkpoint(encoder, tmp_path / "good.pth.tar"), tmp_path / "good", architecture=ARCH)
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in good.iterdir()}
    with pytest.raises(HubtuneError, match="NaN or inf"):
        convert_checkpoint(checkpoint, good, architecture=ARCH, overwrite=True)
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in good.iterdir()} == before
