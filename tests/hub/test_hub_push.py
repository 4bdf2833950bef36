"""Publishing through the local Hub: hubtune pushes, plain timm / transformers and hubtune load."""

from __future__ import annotations

import hashlib
import json
import logging
import re

import pytest
import timm
import torch
from huggingface_hub import HfApi, ModelCard, hf_hub_download
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageClassification, ViTConfig

from hubtune.commands import main as hubtune_main
from hubtune.commands import push as push_command
from hubtune.errors import ConfigError, HubtuneError, ModelFileError, PickleCheckpointError
from hubtune.hub import (
    RUN_INFO_FILENAME,
    HubAuthError,
    HubPushError,
    is_repo_id,
    load_template,
    push_folder,
    pushed_files,
    read_run_info,
    render_classifier_card,
    validate_repo_id,
    write_model_card,
    write_run_info,
)
from hubtune.modeling import HubtuneForImageClassification

LABELS = {0: "zero", 1: "one", 2: "two"}
TOL = 1e-5

# What the training code writes to run_info["method_card"] (from the method registry); hubtune 0.1's card texts.
METHOD_CARDS = {
    "core-tuning": {
        "title": "Core-tuning",
        "description": "Core-tuning (contrast-regularised fine-tuning) adds to the cross-entropy loss a supervised "
        "contrastive term ...",
        "citation": "@inproceedings{zhang2021unleashing,\n  booktitle = {Advances in Neural Information Processing "
        "Systems (NeurIPS)},\n  eprint    = {2102.06605}\n}",
        "tags": ["core-tuning"],
    },
    "adaptivemix": {
        "title": "AdaptiveMix",
        "description": "AdaptiveMix shrinks the regions that the training data occupy in feature space ...",
        "citation": "@inproceedings{liu2023adaptivemix,\n  booktitle = {Proceedings of the IEEE/CVF Conference on "
        "Computer Vision and Pattern Recognition (CVPR)},\n  eprint    = {2303.01559}\n}",
        "tags": ["adaptivemix"],
    },
}


def _run_info(model, **overrides):
    info = {
        "base_model": model.config.backbone_name,
        "backbone_library": model.backbone.library,
        "export_format": model.config.default_export_format,
        "pretrained": False,
        "dataset": "digits",
        "method": "core-tuning",
        "method_preset": "paper",
        "hyperparameters": {"epochs": 2, "batch_size": 16, "learning_rate": 0.01, "eta": 0.1, "image_size": 32},
        "metrics": {"eval_accuracy": 0.8125, "eval_loss": 0.61, "eval_runtime": 0.4},
        "num_labels": 3,
        "id2label": LABELS,
        "log_history": [{"loss": 1.1, "step": 5}, {"loss": 0.7, "step": 10},
                        {"eval_loss": 0.61, "eval_accuracy": 0.8125, "step": 10}],
    }
    info.update(overrides)
    if "method_card" not in overrides and info["method"] in METHOD_CARDS:
        info["method_card"] = METHOD_CARDS[info["method"]]
    return info


def _trained_like(model):
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        model.classifier.weight.copy_(torch.randn(model.classifier.weight.shape, generator=g))
        model.classifier.bias.copy_(torch.randn(model.classifier.bias.shape, generator=g))
    return model.eval()


def _output_folder(model, folder, repo_id=None, **run_info):
    model.save_pretrained(folder)
    write_model_card(folder, _run_info(model, **run_info), repo_id=repo_id)
    return folder


def _digest(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _logits(model, x):
    with torch.no_grad():
        if isinstance(model, timm.models.ResNet):  # a plain timm model takes the tensor positionally
            return model(x)
        return model(pixel_values=x).logits


@pytest.fixture(scope="module")
def timm_model():
    torch.manual_seed(0)
    return _trained_like(HubtuneForImageClassification.from_backbone("test_resnet", id2label=LABELS, image_size=32))


@pytest.fixture(scope="module")
def timm_output(timm_model, tmp_path_factory):
    return _output_folder(timm_model, tmp_path_factory.mktemp("timm-out"))


@pytest.fixture(scope="module")
def vit_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vit-config")
    ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
              intermediate_size=64).save_pretrained(folder)
    torch.manual_seed(0)
    return _trained_like(HubtuneForImageClassification.from_backbone(str(folder), id2label=LABELS))


def _python_blocks(markdown):
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.S)


# --------------------------------------------------------------------------------------------- round trips


def test_timm_round_trip_through_the_hub(local_hub, hub_token, hub_repo_id, timm_model, tmp_path, monkeypatch):
    out = _output_folder(timm_model, tmp_path / "out", repo_id=hub_repo_id)
    before = _digest(out)
    url = push_folder(out, hub_repo_id, token=hub_token)
    assert url == f"{local_hub.endpoint}/{hub_repo_id}"
    assert _digest(out) == before  # a push only reads the folder
    assert set(local_hub.files(hub_repo_id)) >= {"config.json", "model.safetensors", "README.md", "training_curve.png"}
    assert local_hub.files(hub_repo_id)["training_curve.png"].startswith(b"\x89PNG")

    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    expected = _logits(timm_model, x)
    with_timm = timm.create_model(f"hf-hub:{hub_repo_id}", pretrained=True).eval()
    with_transformers = AutoModelForImageClassification.from_pretrained(hub_repo_id).eval()
    with_hubtune = HubtuneForImageClassification.from_pretrained(hub_repo_id)
    assert (_logits(with_timm, x) - expected).abs().max() <= TOL
    assert (_logits(with_transformers, x) - _logits(with_timm, x)).abs().max() <= TOL
    assert (_logits(with_hubtune, x) - expected).abs().max() <= TOL
    assert with_transformers.config.id2label == LABELS and with_hubtune.config.id2label == LABELS

    # The card's own loading code runs as written (timm and transformers snippets).
    card = ModelCard.load(hf_hub_download(hub_repo_id, "README.md"))
    blocks = [b for b in _python_blocks(card.content) if "import hubtune" not in b and "from hubtune" not in b]
    assert len(blocks) == 2 and "timm.create_model" in blocks[0] and "AutoImageProcessor" in blocks[1]
    monkeypatch.chdir(tmp_path)
    Image.fromarray((torch.rand(40, 48, 3) * 255).byte().numpy()).save("image.jpg")
    for block in blocks:
        namespace = {}
        exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - the card's own example code
        assert namespace["logits"].shape == (1, 3)


def test_transformers_round_trip_through_the_hub(local_hub, hub_token, hub_repo_id, vit_model, tmp_path):
    out = _output_folder(vit_model, tmp_path / "out", repo_id=hub_repo_id)
    push_folder(out, hub_repo_id, token=hub_token)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    expected = _logits(vit_model, x)
    plain = AutoModelForImageClassification.from_pretrained(hub_repo_id).eval()
    assert type(plain).__name__ == "ViTForImageClassification"
    assert (_logits(plain, x) - expected).abs().max() <= TOL
    assert (_logits(HubtuneForImageClassification.from_pretrained(hub_repo_id), x) - expected).abs().max() <= TOL
    processor = AutoImageProcessor.from_pretrained(hub_repo_id)
    image = Image.fromarray((torch.rand(40, 48, 3) * 255).byte().numpy())
    assert tuple(processor(images=image, return_tensors="pt")["pixel_values"].shape) == (1, 3, 32, 32)
    card = ModelCard.load(hf_hub_download(hub_repo_id, "README.md"))
    assert card.data.library_name == "transformers"
    assert f'AutoModelForImageClassification.from_pretrained("{hub_repo_id}")' in card.content


def test_revision_and_private(local_hub, hub_token, hub_repo_id, timm_output, timm_model, tmp_path, monkeypatch):
    url = push_folder(timm_output, hub_repo_id, token=hub_token, private=True, revision="v2")
    assert url.endswith(f"{hub_repo_id}/tree/v2")
    api = HfApi(token=hub_token)
    assert api.model_info(hub_repo_id).private is True
    assert "model.safetensors" in local_hub.files(hub_repo_id, "v2")
    assert "model.safetensors" not in local_hub.files(hub_repo_id, "main")
    from huggingface_hub.errors import RepositoryNotFoundError

    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(hub_repo_id, "config.json", revision="v2", token=False, cache_dir=tmp_path / "anon")
    x = torch.randn(2, 3, 32, 32)
    loaded = HubtuneForImageClassification.from_pretrained(hub_repo_id, revision="v2", token=hub_token)
    assert (_logits(loaded, x) - _logits(timm_model, x)).abs().max() <= TOL
    monkeypatch.setenv("HF_TOKEN", hub_token)  # timm reads the token from the environment
    with_timm = timm.create_model(f"hf-hub:{hub_repo_id}@v2", pretrained=True).eval()
    assert (_logits(with_timm, x) - _logits(timm_model, x)).abs().max() <= TOL


def test_token_from_environment_and_never_written(local_hub, hub_token, hub_repo_id, timm_model, tmp_path,
                                                  monkeypatch, caplog, capsys):
    monkeypatch.setenv("HF_TOKEN", hub_token)
    caplog.set_level(logging.DEBUG)
    out = _output_folder(timm_model, tmp_path / "out", repo_id=hub_repo_id)
    assert push_command.run([str(out), hub_repo_id, "--hub_token", hub_token]) == 0
    printed = capsys.readouterr()
    assert f"{local_hub.endpoint}/{hub_repo_id}" in printed.out

    secret = hub_token.encode()
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert secret not in path.read_bytes(), path
    for name, data in local_hub.files(hub_repo_id).items():
        assert secret not in data, name
    assert hub_token not in caplog.text and hub_token not in printed.out + printed.err
    assert any(r.authenticated for r in local_hub.requests if r.route == "commit")


# --------------------------------------------------------------------------------------------- model card


def test_card_metadata_and_body(timm_model, local_hub):
    card = render_classifier_card(_run_info(timm_model, base_model="hf-hub:timm/resnet18.a1_in1k", pretrained=True,
                                            backbone_library="timm"), repo_id="org/resnet18-digits")
    data = ModelCard(str(card)).data  # YAML round trip
    assert data.library_name == "timm"
    assert {"hubtune", "core-tuning", "image-classification"} <= set(data.tags)
    assert data.base_model == "timm/resnet18.a1_in1k"
    assert data.datasets == ["digits"] and data.pipeline_tag == "image-classification"
    assert data.license == "apache-2.0"
    results = {r.metric_type: r.metric_value for r in data.eval_results}
    assert results == {"accuracy": 0.8125, "loss": 0.61}  # timings are not results
    assert data.eval_results[0].task_type == "image-classification"
    assert data.eval_results[0].dataset_name == "digits"
    body = card.content
    assert 'timm.create_model("hf-hub:org/resnet18-digits", pretrained=True)' in body
    assert 'AutoModelForImageClassification.from_pretrained("org/resnet18-digits")' in body
    assert "2102.06605" in body and "NeurIPS" in body
    assert "| learning_rate | 0.01 |" in body and "| accuracy | 0.8125 |" in body
    assert "## Limitations" in body
    card.validate()  # through the local Hub's /api/validate-yaml


def test_random_init_card_has_no_base_model(timm_model):
    card = render_classifier_card(_run_info(timm_model, method="adaptivemix"))
    assert card.data.base_model is None
    assert "trained from random initialisation" in card.content
    assert "2303.01559" in card.content and "CVPR" in card.content
    assert "adaptivemix" in card.data.tags


def test_card_tolerates_missing_keys_and_writes_the_curve(tmp_path):
    card = render_classifier_card({})
    assert card.data.pipeline_tag == "image-classification" and "hubtune" in card.data.tags
    path = write_model_card(tmp_path, {"log_history": [{"loss": 1.0, "step": 1}, {"loss": 0.5, "step": 2}]})
    assert (tmp_path / "training_curve.png").read_bytes().startswith(b"\x89PNG")
    assert "![Training curve](training_curve.png)" in path.read_text()


def test_load_template_finds_the_packaged_templates():
    from pathlib import Path

    source = Path(__file__).resolve().parents[2] / "model_cards" / "classifier.md"
    assert load_template("classifier") == load_template("classifier.md") == source.read_text(encoding="utf-8")
    with pytest.raises(FileNotFoundError, match="no-such-card.md"):
        load_template("no-such-card")


# --------------------------------------------------------------------------------------------- bad input and faults


@pytest.mark.parametrize("repo_id", ["no-namespace", "a/b/c", "org/", "/name", "org/na me", "org/bad--name", 42])
def test_bad_repo_id_fails_before_any_request(local_hub, hub_token, timm_output, repo_id):
    seen = len(local_hub.requests)
    with pytest.raises(ValueError, match="org/name") as err:
        push_folder(timm_output, repo_id, token=hub_token)
    assert isinstance(err.value, ConfigError)
    assert len(local_hub.requests) == seen


def test_repo_ids_follow_huggingface_hub_plus_a_required_namespace():
    """validate_repo_id is huggingface_hub's check plus one rule of hubtune's: the owner must be named."""
    from huggingface_hub.utils import HFValidationError
    from huggingface_hub.utils import validate_repo_id as hub_validate_repo_id

    hub_validate_repo_id("no-namespace")  # the library accepts a bare name ...
    assert not is_repo_id("no-namespace")  # ... hubtune does not
    for bad in ("org/bad--name", "org/name.git", "org/-name", "org/" + "x" * 97, "a/b/c"):
        with pytest.raises(HFValidationError):
            hub_validate_repo_id(bad)
        with pytest.raises(ConfigError, match="not of the form 'org/name'") as err:
            validate_repo_id(bad)
        assert "\n" not in str(err.value)
    assert validate_repo_id("my-org/resnet18.digits_v2") == "my-org/resnet18.digits_v2"


def test_a_push_is_one_commit_and_skips_the_ignore_patterns(local_hub, hub_token, hub_repo_id, timm_output, tmp_path):
    """Why push_folder keeps create_commit rather than upload_folder: with hf_xet installed, upload_folder streams a
    folder in several commits, so a failure half-way would leave a half-updated repo. A push is one commit."""
    import shutil

    out = tmp_path / "out"
    shutil.copytree(timm_output, out)
    for i in range(40):
        (out / "samples" / f"{i:02d}.txt").parent.mkdir(exist_ok=True)
        (out / "samples" / f"{i:02d}.txt").write_text(str(i))
    (out / ".hubtune.lock").write_text("pid")
    (out / "checkpoint-3" / "sub").mkdir(parents=True)
    (out / "checkpoint-3" / "sub" / "model.safetensors").write_bytes(b"resumable")
    (out / "nested" / "checkpoint-9").mkdir(parents=True)  # only top-level checkpoint-* folders are skipped
    (out / "nested" / "checkpoint-9" / "notes.txt").write_text("kept")
    expected = pushed_files(out)
    assert "samples/39.txt" in expected and "nested/checkpoint-9/notes.txt" in expected
    assert not any(f.startswith(("checkpoint-", ".hubtune.lock")) for f in expected)
    push_folder(out, hub_repo_id, token=hub_token)
    repo = local_hub.repos[hub_repo_id]
    assert len(repo.commits) == 2  # the repo's initial commit, then the whole push in one
    assert set(local_hub.files(hub_repo_id)) == {".gitattributes", *expected}


def test_missing_token_fails_before_any_request(local_hub, hub_repo_id, timm_output, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    seen = len(local_hub.requests)
    with pytest.raises(HubAuthError, match="HF_TOKEN"):
        push_folder(timm_output, hub_repo_id)
    assert len(local_hub.requests) == seen


def test_incomplete_folder_fails_before_any_request(local_hub, hub_token, hub_repo_id, timm_model, tmp_path):
    timm_model.save_pretrained(tmp_path)  # no README.md
    seen = len(local_hub.requests)
    with pytest.raises(FileNotFoundError, match="README.md") as err:
        push_folder(tmp_path, hub_repo_id, token=hub_token)
    assert isinstance(err.value, ModelFileError)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        push_folder(tmp_path, hub_repo_id, token=hub_token)
    with pytest.raises(ModelFileError, match="does not exist"):
        push_folder(tmp_path / "missing", hub_repo_id, token=hub_token)
    assert len(local_hub.requests) == seen
    assert hub_repo_id not in local_hub.repos


def test_a_folder_with_nan_weights_is_refused_before_any_request(local_hub, hub_token, hub_repo_id, timm_output,
                                                                 tmp_path):
    """Issue 17: a folder whose weights hold NaN was uploaded over a good model. Now refused, naming file and tensor."""
    import shutil

    from safetensors.torch import load_file, save_file

    from hubtune.errors import ExportError

    push_folder(timm_output, hub_repo_id, token=hub_token)
    remote_before = local_hub.files(hub_repo_id)
    folder = tmp_path / "diverged"
    shutil.copytree(timm_output, folder)
    state = load_file(folder / "model.safetensors")
    name = sorted(k for k, v in state.items() if v.is_floating_point())[-1]
    state[name] = torch.full_like(state[name], float("nan"))
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    local_before = _digest(folder)
    seen = len(local_hub.requests)
    with pytest.raises(ExportError) as err:
        push_folder(folder, hub_repo_id, token=hub_token)
    message = str(err.value)
    assert "model.safetensors" in message and name in message and "NaN or inf" in message
    assert "nothing was uploaded" in message and "\n" not in message
    assert len(local_hub.requests) == seen, "no request before the weights are checked"
    assert local_hub.files(hub_repo_id) == remote_before and _digest(folder) == local_before
    # an inf in a shard of a sharded folder is refused too
    sharded = tmp_path / "sharded"
    shutil.copytree(timm_output, sharded)
    state = load_file(sharded / "model.safetensors")
    (sharded / "model.safetensors").unlink()
    keys = sorted(state)
    save_file({k: state[k] for k in keys[:5]}, sharded / "model-00001-of-00002.safetensors")
    bad = {k: state[k] for k in keys[5:]}
    first_float = next(k for k in keys[5:] if bad[k].is_floating_point())
    bad[first_float] = bad[first_float].clone().fill_(float("inf"))
    save_file(bad, sharded / "model-00002-of-00002.safetensors")
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        **{k: "model-00001-of-00002.safetensors" for k in keys[:5]},
        **{k: "model-00002-of-00002.safetensors" for k in keys[5:]}}}))
    with pytest.raises(ExportError, match=f"model-00002-of-00002.safetensors.*{re.escape(first_float)}"):
        push_folder(sharded, hub_repo_id, token=hub_token)
    assert local_hub.files(hub_repo_id) == remote_before


@pytest.mark.parametrize(
    "route, kind, error, message",
    [
        ("commit", 401, HubAuthError, "rejected the token"),
        ("preupload", 404, HubPushError, "not found"),
        ("commit", 500, HubPushError, "server error \\(500\\)"),
        ("create_repo", 500, HubPushError, "server error \\(500\\)"),
        ("commit", "drop", HubPushError, "connection .* failed"),
    ],
)
def test_faults_give_clear_errors_and_a_rerun_succeeds(local_hub, hub_token, hub_repo_id, timm_output,
                                                       route, kind, error, message):
    before = _digest(timm_output)
    local_hub.inject_fault(route, kind)
    with pytest.raises(error, match=message) as err:
        push_folder(timm_output, hub_repo_id, token=hub_token)
    assert "re-run" in str(err.value) and hub_token not in str(err.value)
    assert _digest(timm_output) == before
    if hub_repo_id in local_hub.repos:
        assert "model.safetensors" not in local_hub.files(hub_repo_id)  # nothing half-committed

    push_folder(timm_output, hub_repo_id, token=hub_token)
    remote = local_hub.files(hub_repo_id)
    for name in before:
        assert hashlib.sha256(remote[name]).hexdigest() == before[name], name


def test_rejected_token(local_hub, hub_repo_id, timm_output):
    with pytest.raises(HubAuthError, match="rejected the token"):
        push_folder(timm_output, hub_repo_id, token="hf_wrong")


def test_loading_a_repo_without_config_or_weights_names_the_file(local_hub, hub_token, hub_repo_id, timm_output,
                                                                  tmp_path):
    api = HfApi(token=hub_token)
    api.create_repo(hub_repo_id)
    api.upload_file(path_or_fileobj=timm_output / "README.md", path_in_repo="README.md", repo_id=hub_repo_id)
    with pytest.raises(FileNotFoundError, match="config.json"):
        HubtuneForImageClassification.from_pretrained(hub_repo_id)
    api.upload_file(path_or_fileobj=timm_output / "config.json", path_in_repo="config.json", repo_id=hub_repo_id)
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        HubtuneForImageClassification.from_pretrained(hub_repo_id)


def test_pickle_only_repo_is_refused(local_hub, hub_token, hub_repo_id, timm_output, timm_model):
    from safetensors.torch import load_file

    api = HfApi(token=hub_token)
    api.create_repo(hub_repo_id)
    api.upload_file(path_or_fileobj=timm_output / "config.json", path_in_repo="config.json", repo_id=hub_repo_id)
    import io

    buffer = io.BytesIO()
    torch.save(load_file(timm_output / "model.safetensors"), buffer)
    api.upload_file(path_or_fileobj=buffer.getvalue(), path_in_repo="pytorch_model.bin", repo_id=hub_repo_id)
    with pytest.raises(PickleCheckpointError, match="allow_pickle"):
        HubtuneForImageClassification.from_pretrained(hub_repo_id)
    x = torch.randn(2, 3, 32, 32)
    loaded = HubtuneForImageClassification.from_pretrained(hub_repo_id, allow_pickle=True)
    assert (_logits(loaded, x) - _logits(timm_model, x)).abs().max() <= TOL


def test_checkpoints_runs_and_pickles_are_not_pushed(local_hub, hub_token, hub_repo_id, timm_output, tmp_path):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(timm_output, out)
    (out / "checkpoint-10").mkdir()
    (out / "checkpoint-10" / "model.safetensors").write_bytes(b"resumable state")
    (out / "runs" / "Jan01").mkdir(parents=True)
    (out / "runs" / "Jan01" / "events.out").write_bytes(b"tensorboard")
    (out / "training_args.bin").write_bytes(b"pickle")
    (out / "all_results.json").write_text("{}")
    push_folder(out, hub_repo_id, token=hub_token)
    files = set(local_hub.files(hub_repo_id))
    assert {"all_results.json", "model.safetensors", "README.md"} <= files
    assert not any(f.startswith(("checkpoint-", "runs/")) or f.endswith(".bin") for f in files)


# --------------------------------------------------------------------------------------------- offline, empty repo


def test_offline_mode_is_named_and_nothing_is_sent(local_hub, hub_token, hub_repo_id, timm_output, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    seen = len(local_hub.requests)
    with pytest.raises(HubPushError, match="HF_HUB_OFFLINE=1 is set: unset it to push"):
        push_folder(timm_output, hub_repo_id, token=hub_token)
    assert len(local_hub.requests) == seen and hub_repo_id not in local_hub.repos


def test_failed_first_push_says_an_empty_repo_was_left_behind(local_hub, hub_token, hub_repo_id, timm_output):
    local_hub.inject_fault("commit", 500)
    with pytest.raises(HubPushError, match="server error \\(500\\)") as err:
        push_folder(timm_output, hub_repo_id, token=hub_token)
    message = str(err.value)
    assert "empty repo was left behind" in message and hub_repo_id in message and "re-run" in message
    assert set(local_hub.files(hub_repo_id)) == {".gitattributes"}  # created, nothing committed
    # The repo exists now: a second failure says nothing about an empty repo left behind by this push.
    local_hub.inject_fault("commit", 500)
    with pytest.raises(HubPushError) as err:
        push_folder(timm_output, hub_repo_id, token=hub_token)
    assert "empty repo" not in str(err.value)
    push_folder(timm_output, hub_repo_id, token=hub_token)
    assert "model.safetensors" in local_hub.files(hub_repo_id)


def test_failed_create_does_not_claim_a_repo(local_hub, hub_token, hub_repo_id, timm_output):
    local_hub.inject_fault("create_repo", 500)
    with pytest.raises(HubPushError) as err:
        push_folder(timm_output, hub_repo_id, token=hub_token)
    assert "empty repo" not in str(err.value) and hub_repo_id not in local_hub.repos


# --------------------------------------------------------------------------------------------- the command


def test_push_command_flags_and_config_file(local_hub, hub_token, hub_repo_id, timm_output, tmp_path, capsys):
    assert push_command.build_parser().prog == "hubtune push"
    assert push_command.run(["--folder", str(timm_output), "--repo_id", hub_repo_id, "--hub_token", hub_token,
                             "--hub_private_repo", "--commit_message", "first"]) == 0
    assert capsys.readouterr().out.strip() == f"{local_hub.endpoint}/{hub_repo_id}"
    assert HfApi(token=hub_token).model_info(hub_repo_id).private is True
    config = tmp_path / "push.json"
    config.write_text(json.dumps({"folder": str(timm_output), "repo_id": hub_repo_id, "revision": "v1"}))
    assert push_command.run([str(config), "--hub-token", hub_token]) == 0  # dashes work too
    assert capsys.readouterr().out.strip().endswith(f"{hub_repo_id}/tree/v1")
    assert "model.safetensors" in local_hub.files(hub_repo_id, "v1")
    # a config file followed by the two positionals; hubtune 0.1's --token still works
    assert push_command.run([str(config), str(timm_output), hub_repo_id, "--revision", "v2",
                             "--token", hub_token]) == 0
    assert "model.safetensors" in local_hub.files(hub_repo_id, "v2")


def test_push_command_errors_are_one_line(local_hub, hub_token, timm_output, capsys):
    assert hubtune_main(["push", str(timm_output), "no-namespace", "--hub_token", hub_token]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("hubtune push: error: Repo id 'no-namespace'") and "\n" not in err
    assert hubtune_main(["push"]) == 1
    assert "needs folder and repo_id" in capsys.readouterr().err
    with pytest.raises(HubtuneError, match="needs repo_id"):
        push_command.run([str(timm_output)])


# --------------------------------------------------------------------------------------------- run info, card text


def test_card_takes_method_text_from_run_info_and_tolerates_old_run_infos():
    card = render_classifier_card({
        "method": "toy", "method_card": {"title": "Toy method", "description": "Adds a toy term.",
                                         "citation": "@misc{toy2030}", "tags": ["toy-tag"]},
        "hyperparameters": {"learning_rate": 0.01, "toy_knob": "on", "skipped": None},
    })
    assert "with **Toy method**" in card.content and "Adds a toy term." in card.content
    assert "@misc{toy2030}" in card.content and {"toy", "toy-tag"} <= set(card.data.tags)
    assert "| toy_knob | on |" in card.content and "skipped" not in card.content
    old = render_classifier_card({"method": "adaptivemix"})  # a hubtune_run.json without method_card
    assert "with **adaptivemix**" in old.content and "```bibtex" not in old.content
    assert "Trained with adaptivemix through hubtune." in old.content


def test_run_info_round_trip_and_ood_section(tmp_path):
    info = {"method": "ce", "dataset": "digits", "ood_table": "In-distribution: digits.\n\n| OOD set | score |"}
    assert write_run_info(tmp_path, info) == tmp_path / RUN_INFO_FILENAME
    assert read_run_info(tmp_path) == info
    assert read_run_info(tmp_path / "missing") is None
    card = (write_model_card(tmp_path, info)).read_text()
    assert "## Out-of-distribution detection" in card and "In-distribution: digits." in card
