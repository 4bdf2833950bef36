"""all_gather_with_grad and the multi-process Core-tuning loss, on 2 CPU processes with gloo.

One spawn runs every distributed check (starting processes is the slow part); each test asserts on
what the workers saved. The single-process expectations are computed here, in the test process.
"""

import datetime
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from hubtune.distributed import (
    GatherShapeMismatchError,
    all_gather_no_grad,
    all_gather_with_grad,
    get_rank,
    get_world_size,
    is_distributed,
)
from hubtune.losses import CoreTuningDraws, CoreTuningLoss, build_hard_pair_rows, focal_supcon_loss
from hubtune.losses.core_tuning import soft_label_cross_entropy

WORLD_SIZE = 2
MICRO_BATCH = 6
IN_DIM, FEATURE_DIM, NUM_CLASSES, PROJ_DIM = 5, 8, 3, 4
ETA = 1.0
PRESETS = ("paper", "reference")


# ----------------------------------------------------------------------------------------------------
# What every process (and the single-process expectation) uses


class TinyClassifier(nn.Module):
    """A backbone, a classifier and a projector, with the loss computed in forward (as modeling.py does)."""

    def __init__(self, preset):
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Sequential(nn.Linear(IN_DIM, FEATURE_DIM), nn.ReLU())
        self.classifier = nn.Linear(FEATURE_DIM, NUM_CLASSES)
        self.projector = nn.Sequential(
            nn.Linear(FEATURE_DIM, FEATURE_DIM), nn.ReLU(), nn.Linear(FEATURE_DIM, PROJ_DIM)
        )
        self.loss = CoreTuningLoss(eta=ETA, preset=preset)

    def forward(self, inputs, labels, draws):
        out = self.loss(self.backbone(inputs), labels, self.classifier, self.projector, draws=draws)
        return out.loss, out.ce_loss, out.contrastive_loss, out.num_positive_pairs


def rank_batch(rank):
    """Rank `rank`'s micro-batch and its own fixed draws."""
    generator = torch.Generator().manual_seed(1000 + rank)
    inputs = torch.randn(MICRO_BATCH, IN_DIM, generator=generator)
    labels = torch.randint(0, NUM_CLASSES, (MICRO_BATCH,), generator=generator)
    draws = CoreTuningDraws(
        permutation=torch.randperm(MICRO_BATCH, generator=generator),
        lam=0.8 + 0.2 * torch.rand(MICRO_BATCH, generator=generator),
        mu=torch.rand(MICRO_BATCH, generator=generator),
    )
    return inputs, labels, draws


def gather_inputs(rank):
    return torch.arange(6, dtype=torch.float64).reshape(2, 3) + 10.0 * rank


def gather_weights(rank):
    return torch.linspace(0.5, 2.0, 2 * WORLD_SIZE * 3, dtype=torch.float64).reshape(-1, 3) * (rank + 1)


# ----------------------------------------------------------------------------------------------------
# The worker


def _worker(rank, port, out_dir):
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=WORLD_SIZE,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        results = {}

        # the gather on its own, with a different loss on each rank
        x = gather_inputs(rank).requires_grad_()
        gathered = all_gather_with_grad(x)
        (gather_weights(rank) * gathered**2).sum().backward()
        results["gathered"] = gathered.detach()
        results["gather_grad"] = x.grad
        results["gathered_no_grad"] = all_gather_no_grad(torch.tensor([rank, 7 * rank]))

        # the full Core-tuning step under real DDP
        inputs, labels, draws = rank_batch(rank)
        for preset in PRESETS:
            model = DistributedDataParallel(TinyClassifier(preset))
            loss, ce, con, num_pairs = model(inputs, labels, draws)
            loss.backward()
            results[f"{preset}.ce"] = ce.detach()
            results[f"{preset}.con"] = con.detach()
            results[f"{preset}.num_pairs"] = num_pairs
            for name, parameter in model.named_parameters():
                results[f"{preset}.grad.{name.removeprefix('module.')}"] = parameter.grad

        # unequal shapes: every rank raises, naming the rank that disagreed
        try:
            all_gather_with_grad(torch.zeros(2 + rank, 3))
            message = "no error"
        except GatherShapeMismatchError as error:
            message = str(error)
        Path(out_dir, f"error{rank}.txt").write_text(message)

        results["world_size"] = torch.tensor(get_world_size())
        results["rank"] = torch.tensor(get_rank())
        tensors = {key: value.contiguous() for key, value in results.items()}
        save_file(tensors, str(Path(out_dir, f"rank{rank}.safetensors")))
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def worker_results(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("distributed")
    mp.spawn(_worker, args=(_free_port(), str(out_dir)), nprocs=WORLD_SIZE, join=True)
    results = [load_file(str(out_dir / f"rank{rank}.safetensors")) for rank in range(WORLD_SIZE)]
    errors = [(out_dir / f"error{rank}.txt").read_text() for rank in range(WORLD_SIZE)]
    return results, errors


# ----------------------------------------------------------------------------------------------------
# Single process


def single_process_step(preset, eta=ETA):
    """One process holding both ranks' micro-batches: per-micro-batch rows, one contrastive loss."""
    model = TinyClassifier(preset)
    batches = [rank_batch(rank) for rank in range(WORLD_SIZE)]
    features = model.backbone(torch.cat([inputs for inputs, _, _ in batches]))
    ce_losses, z, class_a, class_b, weight_a = [], [], [], [], []
    for rank, (_, labels, draws) in enumerate(batches):
        local = features[rank * MICRO_BATCH : (rank + 1) * MICRO_BATCH]
        rows = build_hard_pair_rows(local, labels, draws, preset)
        logits = model.classifier(rows.rows)
        ce_losses.append(soft_label_cross_entropy(logits, rows.class_a, rows.class_b, rows.weight_a))
        z.append(nn.functional.normalize(model.projector(rows.rows), dim=1))
        class_a.append(rows.class_a)
        class_b.append(rows.class_b)
        weight_a.append(rows.weight_a)
    contrast = focal_supcon_loss(
        torch.cat(z),
        torch.cat(class_a),
        torch.cat(class_b),
        torch.cat(weight_a),
        temperature=model.loss.temperature,
        normalisation="positives" if preset == "paper" else "rows",
    )
    loss = torch.stack(ce_losses).mean() + eta * contrast.loss
    loss.backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    return ce_losses, contrast, grads


# ----------------------------------------------------------------------------------------------------
# Tests


def test_gather_is_identity_without_distributed():
    x = torch.randn(3, 2, requires_grad=True)
    assert all_gather_with_grad(x) is x
    assert all_gather_no_grad(x) is x
    assert get_world_size() == 1 and get_rank() == 0 and not is_distributed()


def test_all_gather_with_grad_values_and_gradient(worker_results):
    results, _ = worker_results
    expected = torch.cat([gather_inputs(rank) for rank in range(WORLD_SIZE)])
    for rank in range(WORLD_SIZE):
        assert int(results[rank]["world_size"]) == WORLD_SIZE and int(results[rank]["rank"]) == rank
        torch.testing.assert_close(results[rank]["gathered"], expected)
        # d/dx_r of sum over ranks r' of sum(w_r' * gathered^2): the slice-r of the summed gradients
        summed = sum(2 * gather_weights(other) * expected for other in range(WORLD_SIZE))
        torch.testing.assert_close(results[rank]["gather_grad"], summed[2 * rank : 2 * rank + 2])
        torch.testing.assert_close(results[rank]["gathered_no_grad"], torch.tensor([0, 0, 1, 7]))


def test_unequal_shapes_raise_on_every_rank_naming_the_rank(worker_results):
    _, errors = worker_results
    for message in errors:
        assert "rank 1 has (3, 3)" in message and "rank 0 has (2, 3)" in message


@pytest.mark.parametrize("preset", PRESETS)
def test_ddp_step_equals_one_process_holding_all_rows(worker_results, preset):
    results, _ = worker_results
    ce_losses, contrast, grads = single_process_step(preset)
    assert int(contrast.num_positive_pairs) > 0
    for rank in range(WORLD_SIZE):
        got = results[rank]
        # every rank computes the full contrastive loss over both ranks' rows; CE stays local
        assert got[f"{preset}.con"].item() == pytest.approx(contrast.loss.item(), abs=1e-5)
        assert got[f"{preset}.ce"].item() == pytest.approx(ce_losses[rank].item(), abs=1e-5)
        assert int(got[f"{preset}.num_pairs"]) == int(contrast.num_positive_pairs)
        # after DDP's gradient averaging, every parameter's gradient is the single-process gradient
        for name, grad in grads.items():
            torch.testing.assert_close(got[f"{preset}.grad.{name}"], grad, atol=1e-5, rtol=1e-4)
    # the contrastive term moves the backbone enough that a gradient-scale bug could not hide
    _, _, ce_only_grads = single_process_step(preset, eta=0.0)
    assert (grads["backbone.0.weight"] - ce_only_grads["backbone.0.weight"]).abs().max() > 1e-3
