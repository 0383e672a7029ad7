"""Physical removal with Torch-Pruning, effective cost of a selection, and saving pruned models.

Removal goes group by group through ``DependencyGraph.get_pruning_group(root, handler, idxs)``,
rebuilt just before pruning (Torch-Pruning's advice); groups are disjoint, so sequential removal is
exact. A pruned model is stored as its Torch-Pruning pruning history plus a ``state_dict``:
replaying the history on a fresh model restores the shapes, then the weights load.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch_pruning as tp

from ..training.checkpoint import load_checkpoint, save_checkpoint
from ..training.engine import evaluate
from ..training.metrics import example_input, latency_ms, macs_params


def _out_handler(module: nn.Module):
    if isinstance(module, nn.Conv2d):
        return tp.prune_conv_out_channels
    if isinstance(module, nn.Linear):
        return tp.prune_linear_out_channels
    raise TypeError(f"cannot prune output channels of {type(module).__name__}")


def remove_channels(model: nn.Module, channels: dict[str, list[int]], input_size=(1, 3, 32, 32)):
    """Physically remove ``{root layer name: channel indices}`` from ``model`` (in place).

    Returns Torch-Pruning's pruning history, which :func:`load_pruned` replays.
    """
    with torch.enable_grad():
        DG = tp.DependencyGraph().build_dependency(model, example_input(model, input_size),
                                                   verbose=False)
    for root, idxs in channels.items():
        module = model.get_submodule(root)
        group = DG.get_pruning_group(module, _out_handler(module), list(idxs))
        if not DG.check_pruning_group(group):
            raise ValueError(f"removing {len(idxs)} channels of {root} would empty a layer")
        group.prune()
    return DG.pruning_history()


def effective_macs_params(model: nn.Module, channels: dict[str, list[int]],
                          input_size=(1, 3, 32, 32)) -> tuple[int, int]:
    """MACs and params the model will have once ``channels`` are removed; ``model`` is untouched
    (the removal happens on a deep copy)."""
    if not channels:
        return macs_params(model, input_size)
    clone = copy.deepcopy(model)
    remove_channels(clone, channels, input_size)
    return macs_params(clone, input_size)


def finalize(model: nn.Module, pruner, input_size=(1, 3, 32, 32)):
    """Remove every channel ``pruner`` has driven to exactly zero; return ``(model, history)``.

    Raises if some selected structure is still decaying: finalizing then would change outputs.
    Removing exactly-zero channels leaves the network function unchanged (tested).
    """
    still = pruner.decaying_ids()
    if len(still):
        raise RuntimeError(f"{len(still)} structures are still decaying; train "
                           f"{pruner.decay_steps} more steps before finalize()")
    history = remove_channels(model, pruner.groups.split(pruner.pruned_ids()), input_size)
    pruner.detach()
    return model, history


@torch.no_grad()
def removal_check(dense: nn.Module, model: nn.Module, pruner, test_loader,
                  input_size=(1, 3, 32, 32), batch_size: int = 128) -> dict:
    """:func:`finalize` ``model`` (its pruner finished decaying), measuring what removal changes.

    Returns the largest change of the logits on the first test batch (eval mode; zero up to
    rounding for groups marked ``exact``), top-1 on the test set before and after, and the MACs
    and CPU/GPU latency (:func:`dpm_lab.training.metrics.latency_ms` at ``batch_size``) of the
    ``dense`` model and the pruned one, with their ratios.
    """
    x = next(iter(test_loader))[0].to(next(model.parameters()).device)
    model.eval()
    before, top1_soft = model(x), evaluate(model, test_loader)
    finalize(model, pruner, input_size)
    model.eval()
    change = (model(x) - before).abs().max().item()
    hw = tuple(input_size[2:])
    dense_macs, pruned_macs = macs_params(dense, input_size)[0], macs_params(model, input_size)[0]
    dense_ms = latency_ms(dense, batch_size, hw)
    pruned_ms = latency_ms(model, batch_size, hw)
    return {"max_output_change": change, "top1_soft": top1_soft,
            "top1_removed": evaluate(model, test_loader), "dense_macs": dense_macs,
            "macs": pruned_macs, "macs_ratio": pruned_macs / dense_macs, "dense_ms": dense_ms,
            "ms": pruned_ms, "latency_ratio": pruned_ms / dense_ms}


def save_pruned(path, model: nn.Module, history, **meta) -> None:
    """Save a (possibly pruned) model as pruning history + state_dict + metadata (plain values:
    see :mod:`dpm_lab.training.checkpoint`), atomically."""
    save_checkpoint({"history": _plain_history(history), "state_dict": model.state_dict(), **meta},
                    path)


def _plain_history(history) -> list:
    # Torch-Pruning records [root name, out-channel flag, indices]; the indices are whatever the
    # caller passed (tensor or numpy elements are possible), so store them as ints.
    return [[str(name), bool(out), [int(i) for i in idxs]] for name, out, idxs in history]


def load_pruned(path, model: nn.Module, input_size=(1, 3, 32, 32)) -> nn.Module:
    """Load into a fresh, unpruned ``model`` of the same architecture: replay the history, then
    load the weights. Returns the model (modified in place). A file holding anything but weights
    and plain data is refused (``ValueError``) without running it."""
    ck = load_checkpoint(path)
    with torch.enable_grad():
        DG = tp.DependencyGraph().build_dependency(model, example_input(model, input_size),
                                                   verbose=False)
    DG.load_pruning_history(ck["history"])
    model.load_state_dict(ck["state_dict"])
    return model
