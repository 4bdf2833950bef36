"""L2-SP, BSS, DELTA and Co-Tuning as methods, and what every method must do: train through ``hubtune finetune``,
HubtuneTrainer and a hand-written Accelerate loop, export plain timm / transformers layouts without the training-only
parts, keep those parts in the hubtune layout (exact resume), refuse or warn on what it cannot use."""

from __future__ import annotations

import json
import warnings

import pytest
import timm
import torch
import transformers
from safetensors.torch import load_file
from transformers import AutoModelForImageClassification, TrainingArguments

from hubtune.commands import main
from hubtune.data import build_transforms, collate_image_batch, load_image_classification_data, with_transforms
from hubtune.errors import ConfigError, MethodError
from hubtune.methods import available_methods, get_method
from hubtune.modeling import HubtuneForImageClassification
from hubtune.training import HubtuneTrainer

TRAINING_ONLY = ("start_backbone", "source_classifier", "projector", "loss_fn")
NEW_METHODS = ("l2-sp", "bss", "delta", "co-tuning")


@pytest.fixture(scope="module")
def digits():
    return load_image_classification_data("digits", max_train_samples=64, max_eval_samples=32)


@pytest.fixture(scope="module")
def headless_weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("timm-headless")
    timm.models.save_for_hf(timm.create_model("test_resnet", num_classes=0), str(folder), safe_serialization=True)
    return f"local-dir:{folder}"


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-vit")
    config = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                    image_size=32, patch_size=8)
    torch.manual_seed(0)
    transformers.ViTForImageClassification(config).save_pretrained(path)
    return str(path)


def _model(backbone, method, num_labels=10, **kw):
    torch.manual_seed(0)
    return HubtuneForImageClassification.from_backbone(backbone, num_labels=num_labels, method=method, pretrained=True,
                                                       image_size=32, **kw)


def _batches(model, data, batch_size=16):
    train = with_transforms(data.train, build_transforms(model.preprocessing, train=False))
    return torch.utils.data.DataLoader(train, batch_size=batch_size, collate_fn=collate_image_batch, drop_last=True)


def test_the_registry_holds_all_seven_methods():
    assert set(available_methods()) >= {"ce", "core-tuning", "adaptivemix", *NEW_METHODS}


# ------------------------------------------------------------------------------------------ every method, end to end


@pytest.mark.parametrize("method", available_methods())
def test_every_method_trains_through_hubtune_finetune_and_exports_a_plain_timm_folder(
        method, timm_weights_with_head, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["finetune", "--model", timm_weights_with_head, "--method", method, "--image_size", "32", "--max_steps", "2",
            "--max_train_samples", "32", "--max_eval_samples", "16", "--batch-size", "16", "--output_dir", str(out),
            "--disable_tqdm", "true", "--logging_steps", "1"]
    assert main(argv) == 0, capsys.readouterr().err
    run = json.loads((out / "hubtune_run.json").read_text())
    assert run["method"] == method
    card = (out / "README.md").read_text()  # the method's card section: its title, description and citation
    method_class = get_method(method)
    assert method_class.title in card and method_class.description[:60] in card
    if method_class.citation:
        assert method_class.citation.splitlines()[0] in card
    losses = [e["loss"] for e in run["log_history"] if "loss" in e]
    assert losses and all(torch.isfinite(torch.tensor(losses)))
    weights = load_file(str(out / "model.safetensors"))
    assert not [k for k in weights if k.startswith(TRAINING_ONLY)]
    plain = timm.create_model(f"local-dir:{out}", pretrained=True).eval()  # plain timm, no hubtune
    ours = HubtuneForImageClassification.from_pretrained(out).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(plain(x), ours(x).logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", [m for m in available_methods() if m != "co-tuning"])
def test_every_method_exports_a_plain_transformers_folder_from_a_vit(method, tiny_vit, tmp_path):
    model = _model(tiny_vit, method).train()
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    model.method.prepare(model, [{"pixel_values": x, "labels": y}])  # DELTA's attention; the others: nothing
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05)
    out = model(x, labels=y)
    out.loss.backward()
    opt.step()
    assert torch.isfinite(out.loss)
    model.save_pretrained(tmp_path / "hf")
    weights = load_file(str(tmp_path / "hf" / "model.safetensors"))
    assert not [k for k in weights if k.startswith(TRAINING_ONLY)]
    plain = AutoModelForImageClassification.from_pretrained(tmp_path / "hf").eval()
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(plain(pixel_values=x).logits, model(x).logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", available_methods())
def test_every_method_trains_in_a_hand_written_accelerate_loop(method, timm_weights_with_head, digits, fresh_accelerate_state):
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    model = _model(timm_weights_with_head, method)
    loader = _batches(model, digits)
    model.method.prepare(model, loader)  # Co-Tuning's category relationship; a no-op for the others
    decay = model.method.no_weight_decay(model)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    optimizer = torch.optim.SGD([{"params": [p for n, p in trainable if n not in decay], "weight_decay": 1e-4},
                                 {"params": [p for n, p in trainable if n in decay], "weight_decay": 0.0}], lr=0.01)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    for step, batch in enumerate(loader):
        out = model(**batch)
        accelerator.backward(out.loss)
        optimizer.step()
        optimizer.zero_grad()
        assert torch.isfinite(out.loss) and out.loss_components is not None or method == "ce"
        if step == 1:
            break
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, start[n])}
    assert "classifier.weight" in moved and any(n.startswith("backbone.") for n in moved)
    assert not any(n.startswith("start_backbone.") for n in moved)  # the starting copy stays frozen


# ------------------------------------------------------------------------------------------ L2-SP and DELTA


def test_l2_sp_replaces_the_trainers_weight_decay_even_when_one_is_given(timm_weights_with_head, digits, tmp_path):
    for method, undecayed in (("l2-sp", ("backbone.", "classifier.")), ("delta", ("classifier.",))):
        model = _model(timm_weights_with_head, method)
        args = TrainingArguments(output_dir=str(tmp_path / method), weight_decay=0.1, use_cpu=True, report_to="none",
                                 max_steps=1, per_device_train_batch_size=16, remove_unused_columns=False)
        trainer = HubtuneTrainer(model=model, args=args, train_dataset=_batches(model, digits).dataset,
                                 data_collator=collate_image_batch)
        optimizer = trainer.create_optimizer()
        decayed = {id(p) for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
        names = {n for n, p in model.named_parameters() if id(p) in decayed}
        assert not [n for n in names if n.startswith(undecayed)], method
        if method == "delta":  # the backbone is not what beta replaces: the given weight decay still applies there
            assert any(n.startswith("backbone.") for n in names)
        assert not [n for n in names if n.startswith("start_backbone.")]


@pytest.mark.parametrize("method", ["l2-sp", "delta"])
def test_the_starting_copy_is_frozen_kept_in_checkpoints_and_dropped_on_export(method, timm_weights_with_head, tmp_path):
    model = _model(timm_weights_with_head, method).train()
    assert model.start_backbone.training is False  # model.train() leaves its BatchNorm statistics alone
    assert not any(p.requires_grad for p in model.start_backbone.parameters())
    start = {k: v.clone() for k, v in model.start_backbone.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    model.method.prepare(model, [{"pixel_values": x, "labels": y}])  # DELTA's attention
    out = model(x, labels=y)
    out.loss.backward()
    opt.step()
    for k, v in model.start_backbone.state_dict().items():
        torch.testing.assert_close(v, start[k], msg=k)
    # the hubtune layout (checkpoints) keeps the starting weights, so that a resumed run regularises towards them
    model.save_pretrained(tmp_path / "ckpt", export_format="hubtune")
    loaded = HubtuneForImageClassification.from_pretrained(tmp_path / "ckpt")
    for k, v in loaded.start_backbone.state_dict().items():
        torch.testing.assert_close(v, start[k], msg=k)
    assert not torch.equal(loaded.backbone.model.conv1[0].weight, start["module.conv1.0.weight"])
    model.save_pretrained(tmp_path / "timm")
    assert not [k for k in load_file(str(tmp_path / "timm" / "model.safetensors")) if "start_backbone" in k]


def test_l2_sp_penalty_is_zero_at_the_start_and_grows_as_the_backbone_moves(timm_weights_with_head):
    model = _model(timm_weights_with_head, "l2-sp", method_config={"alpha": 1.0}).train()
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    assert model(x, labels=y).loss_components["sp_loss"].item() == 0.0
    with torch.no_grad():
        model.backbone.model.conv1[0].weight.add_(0.1)
    expected = 0.5 * 0.01 * model.backbone.model.conv1[0].weight.numel()
    assert model(x, labels=y).loss_components["sp_loss"].item() == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("method", ["l2-sp", "delta"])
def test_a_random_initialisation_gets_a_warning(method):
    with pytest.warns(UserWarning, match="randomly initialised"):
        HubtuneForImageClassification.from_backbone("test_resnet", num_labels=3, method=method, image_size=32)


def test_delta_regularises_vit_token_features(tiny_vit):
    model = _model(tiny_vit, "delta", method_config={"alpha": 1.0}).train()
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    model.method.prepare(model, [{"pixel_values": x, "labels": y}])
    assert model(x, labels=y).loss_components["feature_map_loss"].item() == pytest.approx(0.0, abs=1e-10)
    with torch.no_grad():
        for name, param in model.backbone.model.named_parameters():
            if name.endswith("bias"):
                param.add_(0.5)
    assert model(x, labels=y).loss_components["feature_map_loss"].item() > 1e-3


@pytest.mark.parametrize("backbone, expected, channels", [
    ("resnet18", "layer1,layer2,layer3,layer4", [64, 128, 256, 512]),  # the reference's four ResNet stages
    ("mobilenetv2_100", "blocks.1,blocks.2,blocks.4,blocks.6", [24, 32, 96, 320]),  # last block of the last 4 sizes
    ("vit_tiny_patch16_224", "blocks.2,blocks.5,blocks.8,blocks.11", [192] * 4),  # one resolution: evenly spaced
])
def test_delta_regularises_the_last_feature_map_of_each_stage_by_default(backbone, expected, channels):
    model = HubtuneForImageClassification.from_backbone(backbone, num_labels=3, method="delta",
                                                        image_size=224 if "vit" in backbone else 32)
    assert model.config.method_config["layers"] == expected
    assert [a.numel() for a in model.delta_attention.weights()] == channels


def test_delta_layers_of_a_transformers_vit_and_a_wrong_name(tiny_vit):
    assert _model(tiny_vit, "delta").config.method_config["layers"] == "vit.layers.0,vit.layers.1"
    with pytest.raises(MethodError, match="DELTA layers: layer9 is not a feature level of .*its levels are: vit.layers.0"):
        _model(tiny_vit, "delta", method_config={"layers": "layer9"})


def _reference_importance(network, head, layer, batches):
    """DELTA channel_eval.py:178-202 in float64: zero filter j of the hooked conv's weight, re-run, average the loss
    increase over the batches."""
    network, head = network.double().eval(), head.double()
    weight = network.get_submodule(layer).weight
    totals = torch.zeros(weight.shape[0], dtype=torch.float64)
    with torch.no_grad():
        for x, y in batches:
            base = torch.nn.functional.cross_entropy(head(network(x.double())), y)
            for j in range(weight.shape[0]):
                kept = weight[j].clone()
                weight[j] = 0
                totals[j] += torch.nn.functional.cross_entropy(head(network(x.double())), y) - base
                weight[j] = kept
    return totals / len(batches)


def test_delta_importance_is_the_loss_increase_when_the_reference_zeroes_each_filter():
    import copy

    from hubtune.methods.delta import channel_importance

    torch.manual_seed(0)
    network = timm.create_model("test_resnet", num_classes=0).eval()
    layers = ["layer1.0.conv2", "layer3.0.conv3"]  # bias-free convs: zeroing filter j zeroes output channel j
    assert all(network.get_submodule(n).bias is None for n in layers)
    head = torch.nn.Linear(network.num_features, 4)
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(5, 3, 32, 32, generator=g), torch.randint(0, 4, (5,), generator=g)) for _ in range(2)]
    channels = [network.get_submodule(n).weight.shape[0] for n in layers]
    ours = channel_importance(lambda net, x: net(x), head, network, layers, channels, batches)
    for layer, measured in zip(layers, ours):
        expected = _reference_importance(copy.deepcopy(network), copy.deepcopy(head), layer, batches)
        torch.testing.assert_close(measured, expected, rtol=1e-4, atol=1e-6)


def test_delta_attention_is_computed_once_from_the_pretrained_start_and_resumes_exactly(
        timm_weights_with_head, digits, tmp_path):
    model = _model(timm_weights_with_head, "delta")
    loader = list(_batches(model, digits))  # (iterating a DataLoader draws its base seed from the global state)
    with pytest.raises(MethodError, match="not computed yet"):
        model.train()(**loader[0])
    rng = torch.get_rng_state()
    model.method.prepare(model, loader)
    assert torch.equal(torch.get_rng_state(), rng)  # nothing drawn: compare's runs stay paired
    attention = [a.clone() for a in model.delta_attention.weights()]
    assert all(a.sum().item() == pytest.approx(1.0, abs=1e-5) and a.std() > 0 for a in attention)
    again = _model(timm_weights_with_head, "delta")
    with torch.no_grad():  # the attention is the pre-trained model's: moving the weights first changes nothing
        for p in again.backbone.parameters():
            p.add_(0.1)
    again.method.prepare(again, loader)
    for a, b in zip(attention, again.delta_attention.weights()):
        torch.testing.assert_close(a, b)
    model.save_pretrained(tmp_path / "ckpt", export_format="hubtune")
    loaded = HubtuneForImageClassification.from_pretrained(tmp_path / "ckpt")
    loaded.method.prepare(loaded, [])  # already computed: nothing read, nothing recomputed
    for a, b in zip(attention, loaded.delta_attention.weights()):
        torch.testing.assert_close(a, b)
    out = loaded.train()(**loader[0])
    assert out.loss_components["feature_map_loss"].item() >= 0 and torch.isfinite(out.loss)


# ------------------------------------------------------------------------------------------ Co-Tuning


def test_co_tuning_relationship_is_computed_from_the_source_heads_predictions(timm_weights_with_head, digits):
    model = _model(timm_weights_with_head, "co-tuning")
    assert model.config.method_config["source_classes"] == 7
    source = timm.create_model(timm_weights_with_head, pretrained=True).eval()  # the same weights, head included
    loader = _batches(model, digits)
    x, y = next(iter(loader))["pixel_values"], next(iter(loader))["labels"]
    with pytest.raises(MethodError, match="not computed yet"):
        model.train()(x, labels=y)
    model.method.prepare(model, loader)
    sums, counts = torch.zeros(10, 7, dtype=torch.float64), torch.zeros(10, dtype=torch.float64)
    with torch.no_grad():
        for batch in loader:
            probs = torch.softmax(source(batch["pixel_values"]).double(), 1)
            for p, t in zip(probs, batch["labels"].tolist()):
                sums[t] += p
                counts[t] += 1
    expected = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], torch.full_like(sums, 1 / 7))
    torch.testing.assert_close(model.source_classifier.relationship.double(), expected, rtol=1e-5, atol=1e-6)
    assert model.training  # prepare restores the mode it found
    out = model(x, labels=y)
    assert out.loss_components["source_ce_loss"].item() > 0


def test_a_co_tuning_checkpoint_keeps_its_source_head_and_relationship(timm_weights_with_head, digits, tmp_path):
    model = _model(timm_weights_with_head, "co-tuning")
    model.method.prepare(model, _batches(model, digits))
    model.save_pretrained(tmp_path / "ckpt", export_format="hubtune")
    loaded = HubtuneForImageClassification.from_pretrained(tmp_path / "ckpt")
    torch.testing.assert_close(loaded.source_classifier.relationship, model.source_classifier.relationship)
    torch.testing.assert_close(loaded.source_classifier.linear.weight, model.source_classifier.linear.weight)
    loaded.method.prepare(loaded, [])  # already computed: nothing to read, nothing recomputed
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    assert torch.isfinite(loaded.train()(x, labels=y).loss)


def test_co_tuning_without_a_source_head_is_one_clear_line(headless_weights, tiny_vit, tmp_path, capsys):
    with pytest.raises(MethodError, match="needs the pre-trained model's own classifier"):
        _model(headless_weights, "co-tuning")
    with pytest.raises(MethodError, match="Co-Tuning needs a timm backbone with its ImageNet classifier; transformers "
                                          "backbones are not supported yet"):
        _model(tiny_vit, "co-tuning")
    with pytest.raises(MethodError, match="needs the pre-trained model's own classifier"):
        HubtuneForImageClassification.from_backbone("test_resnet", num_labels=3, method="co-tuning")
    code = main(["finetune", "--model", headless_weights, "--method", "co-tuning", "--image_size", "32",
                 "--output_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "Co-Tuning needs the pre-trained model's own classifier" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("method", ["co-tuning", "delta"])
def test_trainer_runs_prepare_on_the_training_images_under_the_evaluation_transform(
        method, timm_weights_with_head, digits, tmp_path):
    model = _model(timm_weights_with_head, method)
    reference = _model(timm_weights_with_head, method)
    evaluation = _batches(reference, digits).dataset
    # the evaluation-transform images in an order shuffled with the run's seed, from a generator of their own
    shuffled = torch.utils.data.DataLoader(evaluation, batch_size=8, shuffle=True, collate_fn=collate_image_batch,
                                           generator=torch.Generator().manual_seed(7))
    reference.method.prepare(reference, shuffled)
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", max_steps=1, seed=7,
                             per_device_train_batch_size=16, per_device_eval_batch_size=8, remove_unused_columns=False,
                             save_strategy="no", learning_rate=0.0)
    train = with_transforms(digits.train, build_transforms(model.preprocessing, train=True))  # random crops and flips
    HubtuneTrainer(model=model, args=args, train_dataset=train, data_collator=collate_image_batch,
                   preparation_dataset=evaluation).train()
    if method == "co-tuning":
        torch.testing.assert_close(model.source_classifier.relationship, reference.source_classifier.relationship)
    else:
        for a, b in zip(model.delta_attention.weights(), reference.delta_attention.weights()):
            torch.testing.assert_close(a, b)


def test_without_a_preparation_dataset_the_trainer_warns_and_uses_the_training_loader(
        timm_weights_with_head, digits, tmp_path):
    model = _model(timm_weights_with_head, "co-tuning")
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", max_steps=1,
                             per_device_train_batch_size=16, remove_unused_columns=False, save_strategy="no")
    with pytest.warns(UserWarning, match="no preparation_dataset"):
        HubtuneTrainer(model=model, args=args, train_dataset=_batches(model, digits).dataset,
                       data_collator=collate_image_batch).train()
    assert bool(model.source_classifier.ready) and model.source_classifier.prepared


def test_the_source_head_reads_the_backbones_own_features_under_normalize_features(timm_weights_with_head, digits):
    plain = _model(timm_weights_with_head, "co-tuning")
    normalized = _model(timm_weights_with_head, "co-tuning", normalize_features=True)
    for model in (plain, normalized):
        model.method.prepare(model, _batches(model, digits))
    torch.testing.assert_close(plain.source_classifier.relationship, normalized.source_classifier.relationship)
    x, y = next(iter(_batches(plain, digits)))["pixel_values"], torch.zeros(16, dtype=torch.long)
    torch.testing.assert_close(plain.train()(x, labels=y).loss_components["source_ce_loss"],
                               normalized.train()(x, labels=y).loss_components["source_ce_loss"])


@pytest.mark.parametrize("knobs, message", [
    ({"alpha": -1}, "alpha"), ({"eta": -0.1}, "eta"), ({"k": 0}, "how many singular values"), ({"trade_off": -1}, "trade_off"),
    ({"source_classes": -2}, "source_classes"),
])
def test_bad_knobs_are_refused(knobs, message):
    from hubtune.methods import create_method

    method = {"alpha": "l2-sp", "eta": "bss", "k": "bss", "trade_off": "co-tuning", "source_classes": "co-tuning"}[next(iter(knobs))]
    with pytest.raises(ConfigError, match=message):
        create_method(method, knobs)


def _relationship_worker(rank, world_size, init_file, weights, batches, result_file):
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        model = _model(weights, "co-tuning")
        model.method.prepare(model, batches[rank::world_size])  # this rank's share of the training batches
        if rank == 0:
            torch.save(model.source_classifier.relationship, result_file)
    finally:
        torch.distributed.destroy_process_group()


def test_the_co_tuning_relationship_is_summed_over_processes(timm_weights_with_head, tmp_path):
    g = torch.Generator().manual_seed(5)
    batches = [{"pixel_values": torch.randn(6, 3, 32, 32, generator=g), "labels": torch.randint(0, 10, (6,), generator=g)}
               for _ in range(4)]
    torch.multiprocessing.spawn(_relationship_worker, nprocs=2, join=True, args=(
        2, str(tmp_path / "init"), timm_weights_with_head, batches, str(tmp_path / "rel.pt")))
    single = _model(timm_weights_with_head, "co-tuning")
    single.method.prepare(single, batches)
    torch.testing.assert_close(torch.load(tmp_path / "rel.pt"), single.source_classifier.relationship)
