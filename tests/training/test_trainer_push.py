"""HubtuneTrainer.push_to_hub / TrainingArguments(push_to_hub=True) against the local Hub server."""

import timm
import torch
from huggingface_hub import HfApi, hf_hub_download
from transformers import AutoModelForImageClassification, TrainingArguments

from hubtune.commands import main
from hubtune.data import build_transforms, collate_image_batch, load_image_classification_data, with_transforms
from hubtune.modeling import HubtuneForImageClassification
from hubtune.training import HubtuneTrainer, compute_accuracy


def test_trainer_push_to_hub_publishes_a_loadable_model_with_the_hubtune_card(local_hub, hub_token, hub_repo_id, tmp_path):
    data = load_image_classification_data("digits", max_train_samples=64, max_eval_samples=32)
    torch.manual_seed(0)
    model = HubtuneForImageClassification.from_backbone("resnet18", id2label=data.id2label, image_size=32)
    transform = build_transforms(model.preprocessing, train=False)
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=16,
        max_steps=2,
        eval_strategy="no",
        save_strategy="no",
        remove_unused_columns=False,
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        push_to_hub=True,
        hub_model_id=hub_repo_id,
        hub_token=hub_token,
    )
    trainer = HubtuneTrainer(
        model=model,
        args=args,
        train_dataset=with_transforms(data.train, transform),
        eval_dataset=with_transforms(data.eval, transform),
        data_collator=collate_image_batch,
        compute_metrics=compute_accuracy,
        dataset_name="digits",
    )
    trainer.train()
    trainer.evaluate()
    trainer.push_to_hub()

    files = set(HfApi().list_repo_files(hub_repo_id, token=hub_token))
    assert {"config.json", "model.safetensors", "README.md"} <= files
    assert not any(f.endswith((".bin", ".pth")) for f in files)
    card = open(hf_hub_download(hub_repo_id, "README.md", token=hub_token), encoding="utf-8").read()
    assert "hubtune" in card and "core-tuning" in card and "library_name: timm" in card
    for name in files:
        path = hf_hub_download(hub_repo_id, name, token=hub_token)
        assert hub_token.encode() not in open(path, "rb").read(), name

    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x).logits
        via_timm = timm.create_model(f"hf-hub:{hub_repo_id}", pretrained=True).eval()(x)
        via_transformers = AutoModelForImageClassification.from_pretrained(hub_repo_id, token=hub_token).eval()(x).logits
    torch.testing.assert_close(via_timm, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(via_transformers, expected, atol=1e-5, rtol=0)


def test_finetune_push_to_hub_and_hubtune_push(local_hub, hub_token, hub_repo_id, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["finetune", "--max-steps", "2", "--max-train-samples", "64", "--max-eval-samples", "32",
                 "--batch-size", "16", "--output-dir", str(out), "--disable_tqdm", "true", "--push-to-hub", hub_repo_id,
                 "--hub-token", hub_token, "--hub_private_repo", "true"])
    assert code == 0, capsys.readouterr().err
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    files = set(HfApi().list_repo_files(hub_repo_id, token=hub_token))
    assert {"config.json", "model.safetensors", "README.md", "training_curve.png"} <= files
    assert not any(f.startswith("checkpoint-") for f in files)
    card = open(hf_hub_download(hub_repo_id, "README.md", token=hub_token), encoding="utf-8").read()
    assert f"hf-hub:{hub_repo_id}" in card  # the card's loading code names the repo
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        pushed = HubtuneForImageClassification.from_pretrained(hub_repo_id, token=hub_token).eval()(x).logits
        local = HubtuneForImageClassification.from_pretrained(out).eval()(x).logits
    torch.testing.assert_close(pushed, local)

    # the finished folder again, to another repo and branch, with the stand-alone command
    assert main(["push", str(out), hub_repo_id + "-copy", "--hub_token", hub_token, "--revision", "v1"]) == 0
    assert "model.safetensors" in HfApi().list_repo_files(hub_repo_id + "-copy", revision="v1", token=hub_token)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # pushing never edits the folder
