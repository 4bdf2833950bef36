"""Collectives that the losses need across processes, with no Accelerate or Trainer knowledge.

`accelerator.gather` carries no gradient, so a contrastive loss that wants every process's rows as
negatives needs `all_gather_with_grad`. Every function here is the identity (or a trivial answer) when
torch.distributed is not initialised or runs a single process, so the same loss code serves one CPU and
many GPUs.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from hubtune.errors import GatherShapeMismatchError

__all__ = [
    "GatherShapeMismatchError",
    "all_gather_no_grad",
    "all_gather_with_grad",
    "get_rank",
    "get_world_size",
    "is_distributed",
]

# Shapes travel as a fixed-length int64 vector so that one small all_gather checks every rank.
_MAX_GATHER_DIMS = 8


def _is_initialised() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_world_size(group=None) -> int:
    """Number of processes in `group` (the default group when None); 1 when not distributed."""
    return dist.get_world_size(group) if _is_initialised() else 1


def get_rank(group=None) -> int:
    """This process's rank in `group`; 0 when not distributed."""
    return dist.get_rank(group) if _is_initialised() else 0


def is_distributed(group=None) -> bool:
    """True when torch.distributed is initialised with more than one process."""
    return get_world_size(group) > 1


def _check_same_shape(tensor: torch.Tensor, group=None) -> None:
    """Raise GatherShapeMismatchError, on every rank, naming the ranks whose shape differs from rank 0's.

    This costs one tiny collective and one host read; all_gather of unequal shapes would otherwise
    hang or fail deep inside the backend with no hint of which process was wrong.
    """
    if tensor.dim() > _MAX_GATHER_DIMS:
        raise ValueError(
            f"all_gather supports tensors of at most {_MAX_GATHER_DIMS} dimensions, got shape "
            f"{tuple(tensor.shape)}"
        )
    padding = [-1] * (_MAX_GATHER_DIMS - tensor.dim())
    descriptor = torch.tensor(
        [tensor.dim(), *tensor.shape, *padding], dtype=torch.int64, device=tensor.device
    )
    descriptors = [torch.empty_like(descriptor) for _ in range(get_world_size(group))]
    dist.all_gather(descriptors, descriptor, group=group)
    shapes = []
    for row in torch.stack(descriptors).tolist():
        shapes.append(tuple(row[1 : 1 + row[0]]))
    disagreeing = [rank for rank, shape in enumerate(shapes) if shape != shapes[0]]
    if disagreeing:
        listed = ", ".join(f"rank {rank} has {shapes[rank]}" for rank in disagreeing)
        raise GatherShapeMismatchError(
            f"all_gather needs the same tensor shape on every process; rank 0 has {shapes[0]} but "
            f"{listed}. Give every process the same micro-batch size (for example drop the last, "
            "smaller batch with drop_last=True / dataloader_drop_last=True)."
        )


def _gather_parts(tensor: torch.Tensor, group) -> list[torch.Tensor]:
    tensor = tensor.contiguous()
    parts = [torch.empty_like(tensor) for _ in range(get_world_size(group))]
    dist.all_gather(parts, tensor, group=group)
    return parts


def all_gather_no_grad(
    tensor: torch.Tensor, group=None, check_shapes: bool = True
) -> torch.Tensor:
    """Concatenate every process's `tensor` along dim 0 (rank order); no gradient flows back.

    Identity when not distributed. `check_shapes` runs the cross-rank shape check first (one extra
    tiny collective and a host sync); switch it off only when equal shapes are guaranteed.
    """
    if not is_distributed(group):
        return tensor
    if check_shapes:
        _check_same_shape(tensor, group)
    with torch.no_grad():
        return torch.cat(_gather_parts(tensor.detach(), group), dim=0)


class _AllGatherWithGrad(torch.autograd.Function):
    """Forward: concatenate every rank's tensor. Backward: sum the incoming gradient over ranks, keep ours.

    Why the sum: each rank's loss may depend on every rank's slice, so the gradient for our slice is
    the sum of what every rank's loss sends it. When every rank computes the *same* loss from the
    gathered tensor, that sum is world_size x the gradient of that loss; DDP then averages parameter
    gradients over ranks (divides by world_size), which leaves exactly the gradient one process would
    get holding all the rows. Returning only our own slice without the sum would leave the gradient
    world_size times too small after DDP's averaging (a known bug in several libraries).
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, group) -> torch.Tensor:
        ctx.group = group
        ctx.rank = get_rank(group)
        ctx.local_size = tensor.shape[0]
        return torch.cat(_gather_parts(tensor, group), dim=0)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        # all_reduce works in place: never write into a gradient autograd may still hold elsewhere.
        summed = grad_output.contiguous().clone()
        dist.all_reduce(summed, op=dist.ReduceOp.SUM, group=ctx.group)
        start = ctx.rank * ctx.local_size
        return summed[start : start + ctx.local_size], None


def all_gather_with_grad(
    tensor: torch.Tensor, group=None, check_shapes: bool = True
) -> torch.Tensor:
    """Concatenate every process's `tensor` along dim 0 (rank order), carrying gradient back.

    The backward pass all-reduces (sums) the gradient of the gathered tensor and returns this rank's
    slice; see `_AllGatherWithGrad` for why that is the right scale under DDP's gradient averaging
    when every rank computes the same loss from the gathered tensor.

    Every process must pass the same shape; with `check_shapes` (the default) a mismatch raises
    GatherShapeMismatchError on every rank naming the rank that disagreed, at the cost of one tiny
    extra collective and a host sync. Identity when not distributed.
    """
    if not is_distributed(group):
        return tensor
    if check_shapes:
        _check_same_shape(tensor, group)
    return _AllGatherWithGrad.apply(tensor, group)
