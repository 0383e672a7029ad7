"""One process or several: DistributedDataParallel when launched by ``torchrun``.

``torchrun --nproc_per_node K -m dpm_lab run ...`` starts K processes with ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` set; :func:`init_from_env` joins them into one process group
(NCCL on GPUs, gloo on CPU), and the rest of the package asks this module where it stands:

- the data loaders split every *global* batch into per-rank shards (``data.TensorLoader``,
  ``data.imagefolder_loaders``), so K processes see exactly the images, in the order and with the
  augmentation draws, of one process with the same global batch;
- the engine wraps the model in DDP for the training forward pass, whose backward all-reduces
  (averages) the gradients: every rank then holds the same gradients and, after the same
  optimiser step, the same weights. Pruning hooks read only those (norms, gradients, the
  optimiser's buffers), so selections, decay factors and Self-Rectifying releases are computed
  from all-reduced quantities and agree bit for bit across ranks without extra communication
  (tested: ``tests/test_distributed.py`` gathers the status vectors at every selection round);
- accuracy and loss are summed over ranks; checkpoints, records and figures are written by rank 0
  only, the other ranks waiting at a barrier so nobody reads a file before it exists.

Per-rank statistics stay per rank where DDP keeps them so: BatchNorm normalises each rank's shard
(its running statistics are broadcast from rank 0 at every forward). That is the standard DDP
setting; it is why a run's identity records ``world_size`` when it is above 1.
"""
from __future__ import annotations

import gc
import os

import torch
import torch.distributed as dist


def init_from_env() -> bool:
    """Join the process group ``torchrun`` describes (``WORLD_SIZE`` > 1); return whether this
    process is one of several. NCCL when CUDA is available (each rank on GPU ``LOCAL_RANK``),
    gloo otherwise. Does nothing when already initialised or launched as a single process."""
    if is_distributed():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    return True


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Whether this process writes files and prints (rank 0, or the only process)."""
    return rank() == 0


def shutdown() -> None:
    """Leave the process group cleanly. DDP wrappers sit in reference cycles (and an interrupted
    run's wrapper in its traceback) that keep the gloo group and its worker threads alive past
    ``destroy_process_group``; left to interpreter shutdown, those threads abort the process
    (``terminate called without an active exception``, about 1 run in 20 here). So: collect the
    cycles, then destroy the group while the interpreter is whole. (No barrier: after an error
    on one rank, a barrier would hang the others.)"""
    if not (dist.is_available() and dist.is_initialized()):
        return
    gc.collect()
    dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_sum(t: torch.Tensor) -> torch.Tensor:
    """``t`` summed over ranks, in place (unchanged in a single process)."""
    if is_distributed():
        dist.all_reduce(t)
    return t


def average_gradients(model: torch.nn.Module) -> None:
    """Average ``.grad`` over ranks (for gradients computed outside DDP's backward, e.g. a
    calibration pass), so every rank ranks structures on the same numbers."""
    if not is_distributed():
        return
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= dist.get_world_size()


def shard(batch_size: int, what: str = "batch size") -> int:
    """This rank's share of a global ``batch_size``; raises unless it divides evenly."""
    w = world_size()
    if batch_size % w:
        raise ValueError(f"{what} {batch_size} does not split over {w} processes; choose a "
                         f"multiple of {w}")
    return batch_size // w


def wrap(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` in DistributedDataParallel when several processes train it, else itself. DDP
    broadcasts rank 0's parameters and buffers, so every rank starts from the same weights."""
    if not is_distributed():
        return model
    from torch.nn.parallel import DistributedDataParallel

    device = next(model.parameters()).device
    ids = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)
