"""GPU checks, written before a GPU was available; every test here is skipped without CUDA (the ``gpu`` marker).

Run them on a CUDA machine with ``pytest -q -m gpu tests/test_gpu.py`` (or ``bash benchmarks/gpu_check.sh``, which
also runs the benchmarks). On one H200 they are expected to take 1-3 minutes (one inductor compile included); the
2-process NCCL test needs two visible GPUs and is skipped with one.

Tolerances: a bf16 autocast step's loss is compared with a float32 step's (TF32 off) on the same batch, the same
weights and the same random draws; bf16 keeps 8 mantissa bits, and the backbone's activations carry that
rounding into the loss, which the losses then compute in float32. The stated tolerance is 2 % relative
(+ 0.01 absolute) on the loss; on CPU the same comparison (resnet18, 64 px, batch 32) differs by <= 1e-4 relative.
"""

from __future__ import annotations

import copy
import datetime
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import GradScalerKwargs
from safetensors.torch import load_file, save_file

from hubtune.distributed import all_gather_with_grad
from hubtune.gan import GANTrainingConfig, train_gan
from hubtune.gan.checkpoint import read_trainer_state
from hubtune.gan.loop import discriminator_step, generator_step, prepare_run, r1_penalty
from hubtune.gan.models import build_gan
from hubtune.losses import CoreTuningDraws, CoreTuningLoss
from hubtune.modeling import HubtuneForImageClassification
from hubtune.devices import configure_backends

pytestmark = pytest.mark.gpu

METHODS = [
    pytest.param("ce", {}, id="ce"),
    pytest.param("core-tuning", {"preset": "paper"}, id="core-tuning-paper"),
    pytest.param("core-tuning", {"preset": "reference"}, id="core-tuning-reference"),
    pytest.param("adaptivemix", {"preset": "paper"}, id="adaptivemix-paper"),
    pytest.param("adaptivemix", {"preset": "reference"}, id="adaptivemix-reference"),
]
BF16_RTOL, BF16_ATOL = 0.02, 0.01
GAN_TINY = dict(dataset="digits", image_size=16, g_channels=8, d_channels=8, latent_dim=16,
                per_device_train_batch_size=8, log_every=1, sample_every=1000, checkpoint_every=3,
                num_sample_images=4, eval_num_samples=0, export_generator=False, progress_bar=False)


@pytest.fixture(autouse=True)
def _clean_state():
    AcceleratorState._reset_state(True)
    torch.cuda.set_sync_debug_mode(0)
    yield
    torch.cuda.set_sync_debug_mode(0)
    AcceleratorState._reset_state(True)


def _model(method, config, backbone="resnet18", image_size=64, num_labels=10):
    torch.manual_seed(0)
    return HubtuneForImageClassification.from_backbone(
        backbone, num_labels=num_labels, method=method, method_config=config, image_size=image_size
    ).cuda().train()


def _batch(size=32, image_size=64, num_labels=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(size, 3, image_size, image_size, generator=g)
    y = torch.randint(0, num_labels, (size,), generator=g)
    return x.cuda(), y.cuda()


# ------------------------------------------------------------------------------------------ classifier steps


@pytest.mark.parametrize("method, config", METHODS)
def test_bf16_training_step_is_finite_and_matches_float32(method, config):
    configure_backends(tf32=False)  # an IEEE float32 reference
    model = _model(method, config)
    x, y = _batch()
    losses = {}
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        step_model = copy.deepcopy(model)
        torch.manual_seed(1)  # the same draws in both steps
        with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            out = step_model(x, labels=y)
        out.loss.backward()
        grads = [p.grad for p in step_model.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads), name
        assert out.loss.dtype == torch.float32
        losses[name] = float(out.loss)
    print(f"{method} {config}: float32 loss {losses['fp32']:.5f}, bf16 loss {losses['bf16']:.5f}")
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=BF16_RTOL, abs=BF16_ATOL)
    configure_backends()


@pytest.mark.parametrize("method, config", [METHODS[1], METHODS[2], METHODS[3], METHODS[4]])
def test_core_tuning_and_adaptivemix_steps_make_no_host_device_sync(method, config):
    model = _model(method, config)
    if method == "core-tuning":
        assert model.loss_fn.validate_labels is False  # the model's device-side label check replaces it
    x, y = _batch()
    for sync_mode in (0, "error"):  # the first step warms cuDNN / cuBLAS up outside the checked region
        torch.cuda.set_sync_debug_mode(sync_mode)
        try:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = model(x, labels=y).loss
            loss.backward()
        finally:
            torch.cuda.set_sync_debug_mode(0)
        model.zero_grad(set_to_none=True)
    assert torch.isfinite(loss)


def test_core_tuning_label_validation_is_the_only_sync_of_the_loss():
    loss_fn = CoreTuningLoss()
    classifier, projector = torch.nn.Linear(16, 4).cuda(), torch.nn.Linear(16, 8).cuda()
    features, labels = torch.randn(12, 16, device="cuda"), torch.randint(0, 4, (12,), device="cuda")
    draws = loss_fn.sample_draws(12, device="cuda")
    loss_fn(features, labels, classifier, projector, draws=draws)  # warm-up
    torch.cuda.set_sync_debug_mode("error")
    try:
        with pytest.raises(RuntimeError, match="synchroniz"):
            loss_fn(features, labels, classifier, projector, draws=draws)
        loss_fn.validate_labels = False
        loss_fn(features, labels, classifier, projector, draws=draws).loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode(0)


def test_compiled_core_tuning_step_with_inductor_matches_eager(monkeypatch):
    pytest.importorskip("triton")  # inductor's GPU code generation
    import torch._inductor.config as inductor_config

    monkeypatch.setattr(inductor_config, "fallback_random", True)
    configure_backends(tf32=False)
    model = _model("core-tuning", {"preset": "paper"})
    x, y = _batch()

    def training_loss(pixel_values, labels):
        return model(pixel_values, labels=labels).loss

    results = []
    for fn in (training_loss, torch.compile(training_loss, fullgraph=True)):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(1)
        loss = fn(x, y)
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    (loss_e, grads_e), (loss_c, grads_c) = results
    torch.testing.assert_close(loss_c, loss_e, rtol=1e-4, atol=1e-5)
    for a, b in zip(grads_c, grads_e):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
    configure_backends()


def test_peak_memory_of_a_core_tuning_step_against_a_ce_step():
    peaks = {}
    x, y = _batch(size=64, image_size=128)
    for method in ("ce", "core-tuning"):
        model = _model(method, {}, image_size=128)
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        for _ in range(2):  # the second step has the optimizer state allocated
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            baseline = torch.cuda.memory_allocated()
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = model(x, labels=y).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            torch.cuda.synchronize()
        peaks[method] = torch.cuda.max_memory_allocated() - baseline
        del model, optimizer, loss
        torch.cuda.empty_cache()
    ratio = peaks["core-tuning"] / peaks["ce"]
    print(f"peak memory above the weights, resnet18 128 px batch 64 bf16: CE {peaks['ce'] / 2**20:.1f} MiB, "
          f"Core-tuning {peaks['core-tuning'] / 2**20:.1f} MiB, ratio {ratio:.3f}")
    assert ratio < 1.25  # Core-tuning adds 3B rows at the heads and a (3B)^2 similarity: small next to the backbone


# ------------------------------------------------------------------------------------------ fp16 GAN


def test_fp16_r1_penalty_is_taken_of_the_scaled_logits_and_matches_float32():
    torch.manual_seed(0)
    _, discriminator = build_gan("dcgan", 32, 3)
    discriminator = discriminator.cuda()
    discriminator(torch.rand(4, 3, 32, 32, device="cuda"))
    discriminator.eval()  # spectral norm's power iteration would otherwise change D between the two calls
    real = (torch.rand(16, 3, 32, 32, device="cuda") * 2 - 1).requires_grad_()
    reference = r1_penalty(discriminator(real), real)  # float32
    # 2^12: on CPU (fp16 autocast) this matches float32 to 1e-3; 2^16 overflows there (see the next test)
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0**12)
    with torch.autocast("cuda", dtype=torch.float16):
        logits = discriminator(real)
    scaled = r1_penalty(logits, real, scaler)
    assert torch.isfinite(scaled) and scaled.dtype == torch.float32
    torch.testing.assert_close(scaled, reference, rtol=2e-2, atol=1e-6)
    scaled.backward()  # the penalty's own backward (create_graph) works under fp16 too
    assert all(torch.isfinite(p.grad).all() for p in discriminator.parameters() if p.grad is not None)


def test_fp16_r1_overflow_is_left_to_the_grad_scaler(tmp_path):
    accelerator = Accelerator(mixed_precision="fp16", kwargs_handlers=[GradScalerKwargs(init_scale=2.0**24)])
    config = GANTrainingConfig.from_options(**{**GAN_TINY, "output_dir": str(tmp_path / "run"), "fp16": True,
                                               "r1_gamma": 1.0, "r1_every": 1})
    run = prepare_run(config, accelerator=accelerator)
    batch = config.optim.per_device_train_batch_size
    real = run.dataset.batch(list(range(batch))).to(accelerator.device)
    z = torch.randn(batch, accelerator.unwrap_model(run.G).latent_dim,
                    device=accelerator.device)
    with accelerator.autocast():
        fake = run.G(z)
    out = discriminator_step(run, real, fake, 0)  # no NonFiniteLossError: the overflow is the scaler's to handle
    assert out.r1 is not None and not torch.isfinite(out.r1), "init_scale 2**24 should overflow the scaled R1 in fp16"
    assert run.opt_d.step_was_skipped and accelerator.scaler.get_scale() < 2.0**24


def test_fp16_skipped_generator_step_skips_the_ema(tmp_path):
    accelerator = Accelerator(mixed_precision="fp16", kwargs_handlers=[GradScalerKwargs(init_scale=2.0**60)])
    config = GANTrainingConfig.from_options(**{**GAN_TINY, "output_dir": str(tmp_path / "run"), "fp16": True})
    run = prepare_run(config, accelerator=accelerator)
    assert accelerator.scaler is not None
    with torch.no_grad():
        for p in run.ema.parameters():
            p.add_(0.1)  # an EMA that differs from G, so that an update would show

    def snapshot():
        g = accelerator.unwrap_model(run.G)
        return ([p.detach().clone() for p in g.parameters()], [p.detach().clone() for p in run.ema.parameters()])

    def one_generator_step(step):
        z = torch.randn(config.optim.per_device_train_batch_size, accelerator.unwrap_model(run.G).latent_dim,
                        device=accelerator.device)
        with accelerator.autocast():
            fake = run.G(z)
        generator_step(run, fake, step)

    before = snapshot()
    one_generator_step(0)  # a scale of 2^60 overflows fp16 gradients: the step is skipped
    assert run.opt_g.step_was_skipped
    after = snapshot()
    for a, b in zip(before[0] + before[1], after[0] + after[1]):
        assert torch.equal(a, b), "a skipped step changed G or its EMA"

    accelerator.scaler.update(new_scale=2.0**10)
    one_generator_step(1)
    assert not run.opt_g.step_was_skipped
    moved = snapshot()
    assert any(not torch.equal(a, b) for a, b in zip(after[0], moved[0]))
    assert any(not torch.equal(a, b) for a, b in zip(after[1], moved[1])), "the EMA follows a real step"


def test_fp16_gan_checkpoint_holds_the_scaler_and_resumes_exactly(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    common = dict(GAN_TINY, fp16=True, r1_gamma=1.0, r1_every=2)
    full = train_gan(GANTrainingConfig.from_options(**common, output_dir=str(tmp_path / "full"), max_steps=6))
    AcceleratorState._reset_state(True)
    train_gan(GANTrainingConfig.from_options(**common, output_dir=str(tmp_path / "split"), max_steps=3))
    state = read_trainer_state(tmp_path / "split" / "checkpoint-3")
    assert state["scaler"] is not None and state["scaler"]["scale"] > 0
    assert state["scaler"] == read_trainer_state(tmp_path / "full" / "checkpoint-3")["scaler"]
    AcceleratorState._reset_state(True)
    resumed = train_gan(GANTrainingConfig.from_options(**common, output_dir=str(tmp_path / "split"), max_steps=6,
                                                       resume_from_checkpoint=True))
    assert [r["step"] for r in resumed.losses] == [4, 5, 6]
    # the scaler's scale and growth tracker come back exactly; the losses agree up to the order of CUDA's
    # atomic additions (index backward), which no seed fixes
    assert read_trainer_state(tmp_path / "split" / "checkpoint-6")["scaler"] == \
        read_trainer_state(tmp_path / "full" / "checkpoint-6")["scaler"]
    for got, want in zip(resumed.losses, full.losses[3:]):
        assert got.keys() == want.keys()
        for key in want:
            assert got[key] == pytest.approx(want[key], rel=1e-3, abs=1e-4), key


# ------------------------------------------------------------------------------------------ two GPUs (NCCL)

WORLD_SIZE, MICRO_BATCH, NUM_CLASSES = 2, 6, 3


def _rank_batch(rank):
    g = torch.Generator().manual_seed(1000 + rank)
    features = torch.randn(MICRO_BATCH, 8, generator=g)
    labels = torch.randint(0, NUM_CLASSES, (MICRO_BATCH,), generator=g)
    draws = CoreTuningDraws(torch.randperm(MICRO_BATCH, generator=g), 0.8 + 0.2 * torch.rand(MICRO_BATCH, generator=g),
                            torch.rand(MICRO_BATCH, generator=g))
    return features, labels, draws


def _nccl_worker(rank, port, out_dir):
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE,
                            timeout=datetime.timedelta(seconds=120))
    try:
        device = torch.device("cuda", rank)
        x = (torch.arange(6, dtype=torch.float64).reshape(2, 3) + 10.0 * rank).to(device).requires_grad_()
        weights = torch.linspace(0.5, 2.0, 2 * WORLD_SIZE * 3, dtype=torch.float64, device=device).reshape(-1, 3)
        gathered = all_gather_with_grad(x)
        (weights * (rank + 1) * gathered**2).sum().backward()
        torch.manual_seed(0)
        classifier, projector = torch.nn.Linear(8, NUM_CLASSES).to(device), torch.nn.Linear(8, 4).to(device)
        features, labels, draws = _rank_batch(rank)
        features = features.to(device).requires_grad_()
        out = CoreTuningLoss(eta=1.0)(features, labels.to(device), classifier, projector, draws=draws.to(device))
        out.loss.backward()
        save_file({"gathered": gathered.detach().cpu(), "grad": x.grad.cpu(),
                   "contrastive": out.contrastive_loss.detach().cpu().reshape(1),
                   "pairs": out.num_positive_pairs.cpu().reshape(1)}, str(Path(out_dir, f"rank{rank}.safetensors")))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two visible GPUs")
def test_two_process_nccl_gather_and_core_tuning_loss(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_nccl_worker, args=(port, str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    results = [load_file(str(tmp_path / f"rank{r}.safetensors")) for r in range(WORLD_SIZE)]
    expected = torch.cat([torch.arange(6, dtype=torch.float64).reshape(2, 3) + 10.0 * r for r in range(WORLD_SIZE)])
    weights = torch.linspace(0.5, 2.0, 2 * WORLD_SIZE * 3, dtype=torch.float64).reshape(-1, 3)
    summed = sum(2 * weights * (r + 1) * expected for r in range(WORLD_SIZE))
    for rank, got in enumerate(results):
        torch.testing.assert_close(got["gathered"], expected)
        torch.testing.assert_close(got["grad"], summed[2 * rank: 2 * rank + 2])
    # every process computes the same contrastive loss over both processes' rows
    torch.testing.assert_close(results[0]["contrastive"], results[1]["contrastive"])
    assert int(results[0]["pairs"]) == int(results[1]["pairs"]) > 0

