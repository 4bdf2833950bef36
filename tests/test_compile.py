"""torch.compile of the training steps, on CPU: one graph (0 graph breaks), eager numerics, bounded recompiles.

Backends: ``torch._dynamo.explain`` (its own backend) counts graph breaks; the numerical and recompile checks use
``aot_eager``, which runs Dynamo's capture AND AOTAutograd's joint forward/backward graph (the parts hubtune's
code decides) but executes the aten ops eagerly, so a check costs seconds. Inductor's code generation takes
30-90 s per graph on one CPU thread; it is checked once, opt-in (``HUBTUNE_TEST_INDUCTOR=1``), in
benchmarks/bench_compile.py, and on CUDA in tests/test_gpu.py.
"""

from __future__ import annotations

import copy
import os

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

from hubtune.commands import main
from hubtune.gan.loop import discriminator_loss
from hubtune.gan.models import build_gan
from hubtune.losses.adaptive_mix import AdaptiveMix
from hubtune.modeling import HubtuneForImageClassification

BACKBONE = "test_resnet"  # timm's smallest ResNet: compile times of seconds
METHODS = [
    pytest.param("ce", {}, id="ce"),
    pytest.param("core-tuning", {"preset": "paper"}, id="core-tuning-paper"),
    pytest.param("core-tuning", {"preset": "reference"}, id="core-tuning-reference"),
    pytest.param("adaptivemix", {"preset": "paper"}, id="adaptivemix-paper"),
    pytest.param("l2-sp", {}, id="l2-sp"),
    pytest.param("bss", {}, id="bss"),
    pytest.param("delta", {}, id="delta"),
    pytest.param("co-tuning", {}, id="co-tuning"),
]


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _model(method: str, config: dict, weights: str | None = None) -> HubtuneForImageClassification:
    """test_resnet from random weights, or from ``weights`` (pretrained, with its own head: Co-Tuning needs one)."""
    torch.manual_seed(0)
    model = HubtuneForImageClassification.from_backbone(
        weights or BACKBONE, num_labels=5, method=method, method_config=config, image_size=32,
        pretrained=weights is not None,
    ).train()
    x, y = _batch(16, seed=99)
    model.method.prepare(model, [{"pixel_values": x, "labels": y}])  # Co-Tuning's relationship; else nothing
    return model


def _batch(size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(size, 3, 32, 32, generator=g), torch.randint(0, 5, (size,), generator=g)


def _loss_and_grads(fn, module: torch.nn.Module, *inputs, seed: int = 1):
    module.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # the same random draws (mixing weights, permutations, noise) for eager and compiled
    loss = fn(*inputs)
    loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in module.named_parameters() if p.grad is not None}
    module.zero_grad(set_to_none=True)
    return loss.detach(), grads


def _assert_close(eager, compiled):
    (loss_e, grads_e), (loss_c, grads_c) = eager, compiled
    torch.testing.assert_close(loss_c, loss_e, rtol=1e-5, atol=1e-6)
    assert grads_e.keys() == grads_c.keys() and grads_e
    for name in grads_e:
        torch.testing.assert_close(grads_c[name], grads_e[name], rtol=1e-4, atol=1e-5, msg=name)


def _graph_breaks(fn, *inputs) -> tuple[int, int, list[str]]:
    explanation = torch._dynamo.explain(fn)(*inputs)
    reasons = [f"{b.reason} at {b.user_stack[-1] if b.user_stack else '?'}" for b in explanation.break_reasons]
    return explanation.graph_count, explanation.graph_break_count, reasons


@pytest.mark.parametrize("method, config", METHODS)
def test_training_forward_compiles_into_one_graph_that_matches_eager(method, config, timm_weights_with_head):
    model = _model(method, config, timm_weights_with_head)

    def training_loss(pixel_values, labels):
        return model(pixel_values, labels=labels).loss

    x, y = _batch(8)
    graphs, breaks, reasons = _graph_breaks(training_loss, x, y)
    assert (graphs, breaks) == (1, 0), reasons
    torch._dynamo.reset()

    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(training_loss, fullgraph=True, backend=counter)
    _assert_close(_loss_and_grads(training_loss, model, x, y), _loss_and_grads(compiled, model, x, y))
    assert counter.frame_count == 1

    # Other batch contents reuse the graph; a last batch of another size recompiles once, with a dynamic batch
    # dimension (automatic dynamic shapes), which every later size then reuses.
    for size, seed in [(8, 1), (6, 2), (5, 3)]:
        xb, yb = _batch(size, seed)
        _assert_close(_loss_and_grads(training_loss, model, xb, yb, seed=seed),
                      _loss_and_grads(compiled, model, xb, yb, seed=seed))
    assert counter.frame_count == 2, f"{counter.frame_count} compilations for 4 batches of 3 sizes"


def test_a_batch_dimension_marked_dynamic_compiles_once():
    model = _model("core-tuning", {"preset": "paper"})
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(lambda x, y: model(x, labels=y).loss, fullgraph=True, backend=counter)
    for size in (8, 6, 5):
        x, y = _batch(size, size)
        torch._dynamo.mark_dynamic(x, 0)
        torch._dynamo.mark_dynamic(y, 0)
        compiled(x, y).backward()
    assert counter.frame_count == 1


def test_ramping_a_loss_weight_recompiles_at_most_once():
    # LossWeightWarmupCallback changes loss_fn.eta (a Python float) every step during the warm-up.
    model = _model("core-tuning", {"preset": "paper"})
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(lambda x, y: model(x, labels=y).loss, fullgraph=True, backend=counter)
    x, y = _batch(8)
    for eta in (0.0, 0.01, 0.02, 0.03, 0.04):
        model.loss_fn.eta = eta
        compiled(x, y)
    assert counter.frame_count <= 2


def test_out_of_range_labels_still_fail_under_compile():
    # Under torch.compile the label check is a device-side assert (torch._assert_async): no host read, no break.
    model = _model("ce", {})
    compiled = torch.compile(lambda x, y: model(x, labels=y).loss, fullgraph=True, backend="aot_eager")
    x, y = _batch(8)
    compiled(x, y)
    with pytest.raises(RuntimeError, match="labels must lie in"):
        compiled(x, torch.full_like(y, 5))


@pytest.mark.parametrize("preset", ["paper", "reference"])
def test_gan_discriminator_loss_compiles_into_one_graph_that_matches_eager(preset):
    torch.manual_seed(0)
    _, discriminator = build_gan("dcgan", 32, 3)
    ada = AdaptiveMix(preset=preset)
    g = torch.Generator().manual_seed(0)
    real, fake = torch.rand(8, 3, 32, 32, generator=g) * 2 - 1, torch.rand(8, 3, 32, 32, generator=g) * 2 - 1

    def loss_of(d):
        def discriminator_step_loss(real, fake):  # the loss part of hubtune.gan.loop.discriminator_step
            out_real, out_fake = ada(d, real), ada(d, fake)
            return discriminator_loss(out_real.logits, out_fake.logits) + out_real.loss + out_fake.loss
        return discriminator_step_loss

    graphs, breaks, reasons = _graph_breaks(loss_of(copy.deepcopy(discriminator)), real, fake)
    assert (graphs, breaks) == (1, 0), reasons
    torch._dynamo.reset()

    # spectral norm updates its power-iteration vectors on every training-mode call: compare two equal copies
    d_eager, d_compiled = copy.deepcopy(discriminator), copy.deepcopy(discriminator)
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(loss_of(d_compiled), fullgraph=True, backend=counter)
    for size, seed in [(8, 1), (8, 2), (6, 3), (5, 4)]:
        xr, xf = real[:size] * 0.9 ** seed, fake[:size]
        _assert_close(_loss_and_grads(loss_of(d_eager), d_eager, xr, xf, seed=seed),
                      _loss_and_grads(compiled, d_compiled, xr, xf, seed=seed))
    assert counter.frame_count == 2


def test_finetune_with_torch_compile_runs_without_graph_breaks(tmp_path, capsys):
    from torch._dynamo.utils import counters

    counters.clear()
    code = main([
        "finetune", "--model", BACKBONE, "--dataset", "digits", "--max_train_samples", "40", "--max_eval_samples",
        "8", "--per_device_train_batch_size", "16", "--max_steps", "2", "--eval_strategy", "no", "--save_strategy",
        "no", "--output_dir", str(tmp_path / "out"), "--torch_compile", "--torch_compile_backend", "aot_eager",
    ])
    assert code == 0, capsys.readouterr().err
    assert counters["stats"]["unique_graphs"] >= 1  # the Trainer's model really ran compiled
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert (tmp_path / "out" / "model.safetensors").is_file()


@pytest.mark.skipif(os.environ.get("HUBTUNE_TEST_INDUCTOR") != "1",
                    reason="inductor's CPU code generation takes ~80 s on one thread; set HUBTUNE_TEST_INDUCTOR=1")
def test_inductor_matches_eager(monkeypatch):
    import torch._inductor.config as inductor_config

    monkeypatch.setattr(inductor_config, "fallback_random", True)  # eager's random streams, for the comparison
    model = _model("core-tuning", {"preset": "paper"})

    def training_loss(pixel_values, labels):
        return model(pixel_values, labels=labels).loss

    x, y = _batch(8)
    compiled = torch.compile(training_loss, fullgraph=True)
    _assert_close(_loss_and_grads(training_loss, model, x, y), _loss_and_grads(compiled, model, x, y))
