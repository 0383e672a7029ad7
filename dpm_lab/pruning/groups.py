"""Channel groups: Torch-Pruning's dependency groups turned into flat index tensors.

A *structure* is one channel of one dependency group: every parameter slice that must vanish
together when that channel is removed (a conv's output filter and bias, the following BN's γ and β,
the consumers' input columns, and across residual adds all coupled layers). Structures are
numbered globally ``0..S-1``, group by group.

For fast per-step work (Smooth Pruning, Self-Rectifying) we keep, per touched parameter tensor
and dimension, an ``owner`` vector mapping each index along that dimension to its structure id
(``S`` = owned by none). Then, for any per-structure factor vector, one gather and one in-place
multiply per parameter rescale every structure at once, and one ``index_add_`` per parameter
computes every structure's squared L2 norm. No Python loop over channels or groups per step.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch_pruning as tp
from torch.nn.modules.batchnorm import _BatchNorm


@dataclass
class Group:
    """One dependency group, rooted at a conv/linear layer's output channels."""

    root: str                 # module name of the root layer
    size: int                 # number of channels (structures) in the group
    offset: int               # global id of its channel 0
    members: list[str]        # names of the coupled layers, for display


@dataclass
class _Entry:
    """One parameter tensor, along one dimension, with the structure owning each index."""

    param: nn.Parameter
    dim: int                  # 0: output rows; 1: input columns
    owner: torch.Tensor       # long [param.shape[dim]], values in 0..S (S = none)
    bn: bool = False          # a normalisation layer's γ or β (the channel's scale)

    @property
    def producer(self) -> bool:
        """Output rows, biases and BN γ/β: the slices that make the channel. The consumers'
        input columns (``dim == 1``) only read it."""
        return self.dim == 0


def output_layer(model: nn.Module) -> nn.Module:
    """The classifier layer (the last ``nn.Linear``): never pruned, as in Torch-Pruning's benchmark."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("model has no nn.Linear output layer; pass ignored_layers explicitly")
    return linears[-1]


def _slices(module: nn.Module, handler) -> list[tuple[nn.Parameter, int]]:
    """The (parameter, dim) pairs a Torch-Pruning handler would cut in ``module``."""
    name = getattr(handler, "__name__", "")
    if isinstance(module, _BatchNorm):
        return [(p, 0) for p in (module.weight, module.bias) if p is not None]
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        if isinstance(module, nn.Conv2d) and module.groups != 1:
            raise NotImplementedError(f"grouped convolution {module} is not supported yet")
        if name == "prune_out_channels":
            return [(p, 0) for p in (module.weight, module.bias) if p is not None]
        if name == "prune_in_channels":
            return [(module.weight, 1)]
    return []  # parameter-free nodes (adds, ReLUs, reshapes) and unsupported layers


class ChannelGroups:
    """All prunable structures of ``model`` and the vectorised operations over them.

    ``example_inputs`` traces the model (Torch-Pruning needs grad mode on). The output layer is
    ignored unless ``ignored_layers`` says otherwise. ``groups_tp`` keeps Torch-Pruning's group
    objects for importance scoring; they stay valid while no layer changes shape.

    ``consumers=False`` keeps only the producer side of each structure (conv/linear output rows
    and biases, BN γ and β) and leaves out the consumers' input columns: that is OTOv2's
    *zero-invariant group*, the smallest set whose zeroing already silences the channel (the
    consumers then multiply an exact zero). Removal is the same either way.
    """

    def __init__(self, model: nn.Module, example_inputs: torch.Tensor, ignored_layers=None,
                 consumers: bool = True):
        self.model, self.consumers = model, consumers
        self.names = {m: n for n, m in model.named_modules()}
        ignored = list(ignored_layers) if ignored_layers is not None else [output_layer(model)]
        with torch.enable_grad():
            self.DG = tp.DependencyGraph().build_dependency(model, example_inputs, verbose=False)
        self.groups_tp = list(self.DG.get_all_groups(ignored_layers=ignored,
                                                     root_module_types=[nn.Conv2d, nn.Linear]))
        self.groups: list[Group] = []
        entries: dict[tuple[int, int], _Entry] = {}
        offset = 0
        for g in self.groups_tp:
            size = len(g[0].idxs)
            members = []
            for item in g:
                module = item.dep.target.module
                slices = [(p, dim) for p, dim in _slices(module, item.dep.handler)
                          if consumers or dim == 0]
                if not slices:
                    continue
                members.append(self.names[module])
                idxs = torch.as_tensor(item.idxs, dtype=torch.long)
                structure = offset + torch.as_tensor(item.root_idxs, dtype=torch.long)
                for p, dim in slices:
                    key = (id(p), dim)
                    if key not in entries:
                        entries[key] = _Entry(p, dim, torch.full((p.shape[dim],), -1, dtype=torch.long),
                                              bn=isinstance(module, _BatchNorm))
                    owner = entries[key].owner
                    clash = (owner[idxs] >= 0) & (owner[idxs] != structure)
                    if clash.any():
                        raise NotImplementedError(f"{self.names[module]} dim {dim} is shared by two groups")
                    owner[idxs] = structure
            self.groups.append(Group(self.names[g[0].dep.target.module], size, offset, members))
            offset += size
        self.num_structures = offset
        self.entries = list(entries.values())
        for e in self.entries:
            e.owner[e.owner < 0] = offset
        self.group_of = torch.repeat_interleave(torch.arange(len(self.groups)),
                                                torch.tensor([g.size for g in self.groups]))
        # structures whose scale lives in a BN (γ, β): train-mode BN makes their filters'
        # norms scale-invariant, so scale-free signals read the BN slices instead
        self.has_bn = self.reduce(lambda p: torch.ones_like(p), self.bn_entries()) > 0

    # ---- vectorised per-structure operations (no loop over channels, no host sync) ----

    def to(self, device) -> "ChannelGroups":
        for e in self.entries:
            e.owner = e.owner.to(device)
        self.group_of = self.group_of.to(device)
        self.has_bn = self.has_bn.to(device)
        return self

    def producer_entries(self) -> list[_Entry]:
        return [e for e in self.entries if e.producer]

    def bn_entries(self) -> list[_Entry]:
        return [e for e in self.entries if e.bn]

    def squared_norms(self, tensors=None, entries=None) -> torch.Tensor:
        """Squared L2 norm of every structure, shape ``[S]``.

        ``tensors``: ``None`` for the parameters themselves, ``"grad"`` for their gradients
        (missing gradients count as zero). ``entries``: only these slices (default: all), e.g.
        :meth:`producer_entries`.
        """
        dtype = self.dtype
        if tensors is None:
            return self.reduce(lambda p: p.to(dtype).pow(2), entries)
        return self.reduce(lambda p: None if p.grad is None else p.grad.to(dtype).pow(2), entries)

    @property
    def dtype(self) -> torch.dtype:
        """What per-structure sums accumulate in: the parameters' dtype, float32 at least (so a
        float64 model's norms, and the invariants tested on them, are float64)."""
        return torch.promote_types(self.entries[0].param.dtype, torch.float32)

    def reduce(self, fn, entries=None) -> torch.Tensor:
        """Per structure, the sum of ``fn(param)`` (a tensor shaped like ``param``, or ``None`` to
        skip it) over the structure's slices (of ``entries``, default all): shape ``[S]``. One
        ``index_add_`` per parameter."""
        device, dtype = self.entries[0].param.device, self.dtype
        buf = torch.zeros(self.num_structures + 1, device=device, dtype=dtype)
        with torch.no_grad():
            for e in self.entries if entries is None else entries:
                t = fn(e.param)
                if t is None:
                    continue
                if t.dim() > 1:
                    t = t.transpose(0, e.dim).reshape(t.shape[e.dim], -1).sum(1)
                buf.index_add_(0, e.owner, t.to(dtype))
        return buf[:-1]

    @staticmethod
    def pad(values: torch.Tensor, fill: float = 1.0) -> torch.Tensor:
        """``values[S]`` plus one ``fill`` slot for the indices no structure owns (pad once per
        step, then :meth:`expand` per parameter)."""
        return torch.cat([values, values.new_full((1,), fill)])

    @staticmethod
    def expand(padded: torch.Tensor, entry: "_Entry") -> torch.Tensor:
        """A :meth:`pad`-ed per-structure vector broadcast onto ``entry``'s parameter shape."""
        shape = [1] * entry.param.dim()
        shape[entry.dim] = -1
        return padded[entry.owner].view(shape)

    def scale_(self, factor: torch.Tensor, optimizer_state_mask: torch.Tensor | None = None,
               optimizer: torch.optim.Optimizer | None = None,
               consumer_factor: torch.Tensor | None = None) -> None:
        """Multiply every structure's slices by ``factor[structure]`` in place (``[S]``).

        ``consumer_factor``: a different factor for the consumers' input columns (default: the
        same). With ``optimizer`` and ``optimizer_state_mask``, the optimiser's per-parameter
        buffers (momentum, Adam moments) are multiplied by the mask too, so they cannot revive
        a slice.
        """
        f = self.pad(factor)
        fc = f if consumer_factor is None else self.pad(consumer_factor)
        mask = None if optimizer_state_mask is None else self.pad(optimizer_state_mask)
        with torch.no_grad():
            for e in self.entries:
                p = e.param
                p.mul_(self.expand(f if e.producer else fc, e).to(p.dtype))
                if mask is not None and optimizer is not None:
                    m = self.expand(mask, e)
                    for buf in optimizer.state.get(p, {}).values():
                        if torch.is_tensor(buf) and buf.shape == p.shape:
                            buf.mul_(m.to(buf.dtype))

    def group_mean(self, values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Per structure, the ``weight``-weighted mean of ``values`` over its group (``[S]``)."""
        n = len(self.groups)
        weight = weight.to(values.dtype)
        sums = values.new_zeros(n).index_add_(0, self.group_of, values * weight)
        cnts = values.new_zeros(n).index_add_(0, self.group_of, weight)
        return (sums / cnts.clamp_min(1e-12))[self.group_of]

    # ---- host-side helpers used at selection time ----

    def importance(self, importance) -> torch.Tensor:
        """Scores of all structures (``[S]``) from a Torch-Pruning importance object, group by group.
        Higher = more important. Gradient-based importances need ``.grad`` populated first."""
        scores = [importance(g).detach().float().reshape(-1) for g in self.groups_tp]
        return torch.cat(scores).cpu()

    def structure_ids(self, root: str, idxs) -> torch.Tensor:
        """Global structure ids of channels ``idxs`` of the group rooted at layer ``root``."""
        offsets = {g.root: g.offset for g in self.groups}
        if root not in offsets:
            raise KeyError(f"{root!r} roots no group here; roots: {', '.join(offsets)}")
        return offsets[root] + torch.as_tensor(list(idxs), dtype=torch.long)

    def split(self, structure_ids) -> dict[str, list[int]]:
        """``{root layer name: sorted channel indices}`` for a set of structure ids."""
        ids = np.asarray(sorted(int(i) for i in structure_ids), dtype=np.int64)
        out = {}
        for g in self.groups:
            sel = ids[(ids >= g.offset) & (ids < g.offset + g.size)] - g.offset
            if len(sel):
                out[g.root] = sel.tolist()
        return out

