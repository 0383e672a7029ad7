"""Channel groups: Torch-Pruning's dependency groups turned into flat index tensors.

A *structure* is the smallest unit of one dependency group that can be removed: every parameter
slice that must vanish together (a conv's output filter and bias, the following BN's γ and β, the
consumers' input columns, and across residual adds all coupled layers). Usually that is one
channel. Where a member layer splits its channels into blocks that must stay equal in size
(grouped convolutions, GroupNorm, attention heads), Torch-Pruning removes the same position from
every block, so a structure is that position in every block: ``ch_groups`` channels
``{j + k * size}``. At ``granularity="head"`` a structure is instead one attention head: its
rows of q, k and v in the ``qkv`` projection and its input columns of ``proj``. Structures are
numbered globally ``0..S-1``, group by group; each group's ``position`` maps its root channels to
their structure.

For fast per-step work (Smooth Pruning, Self-Rectifying) we keep, per touched parameter tensor
and dimension, an ``owner`` vector mapping each index along that dimension to its structure id
(``S`` = owned by none). Then, for any per-structure factor vector, one gather and one in-place
multiply per parameter rescale every structure at once, and one ``index_add_`` per parameter
computes every structure's squared L2 norm. No Python loop over channels or groups per step.

Which slices a layer contributes is read from the Torch-Pruning pruning function that the
dependency graph assigns it (:func:`_slices`), one case per function class; a layer with
parameters that no case covers is refused by name rather than silently left half-decayed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch_pruning as tp
from torch_pruning.pruner import function as tpf


@dataclass
class Group:
    """One dependency group, rooted at a conv/linear layer's output channels."""

    root: str                 # module name of the root layer
    size: int                 # number of structures in the group
    offset: int               # global id of its structure 0
    members: list[str]        # names of the coupled layers, for display
    position: torch.Tensor    # long [channels]: the structure (0..size-1) of each root channel
    ch_groups: int = 1        # channel blocks; a structure is one position in every block
    exact: bool = True        # removing zeroed structures leaves the function unchanged
    unit: str = "channel"     # what a structure is: "channel" or "head"

    @property
    def channels(self) -> int:
        """Channels of the root layer in the group."""
        return len(self.position)


@dataclass
class _Entry:
    """One parameter tensor, along one dimension, with the structure owning each index."""

    param: nn.Parameter
    dim: int                  # the dimension whose indices the structures own
    owner: torch.Tensor       # long [param.shape[dim]], values in 0..S (S = none)
    producer: bool = True     # slices that make the channel (rows, biases, γ/β, embeddings);
    #                           False: a consumer's input columns, which only read it
    bn: bool = False          # a normalisation layer's γ or β (the channel's scale)


@dataclass
class _Slice:
    """What one group member cuts: ``param`` along ``dim`` at ``positions``; position ``i``
    belongs to the member's channel ``idxs[item[i]]``."""

    param: nn.Parameter
    dim: int
    positions: torch.Tensor
    item: torch.Tensor
    producer: bool = True
    norm: bool = False


# Normalisations whose statistics run over the pruned dimension: a zeroed channel still counts
# in the mean and variance until it is removed, so removal changes the outputs (LayerNorm,
# GroupNorm). BatchNorm and InstanceNorm normalise each channel alone.
_MIXING_NORMS = (tpf.LayernormPruner, tpf.GroupNormPruner)


def output_layer(model: nn.Module) -> nn.Module:
    """The classifier layer (the last ``nn.Linear``): never pruned, as in Torch-Pruning's benchmark."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("model has no nn.Linear output layer; pass ignored_layers explicitly")
    return linears[-1]


def _along(param, dim, idxs, producer=True, norm=False, positions=None) -> _Slice:
    item = torch.arange(len(idxs))
    return _Slice(param, dim % param.dim(), idxs if positions is None else positions, item,
                  producer, norm)


def _slices(module, handler, idxs: torch.Tensor, name: str, pruning_dim: int = -1) -> list[_Slice]:
    """The parameter slices Torch-Pruning's ``handler`` cuts when it removes channels ``idxs``
    of ``module``: one case per pruning-function class of ``torch_pruning.pruner.function``.
    ``pruning_dim``: the graph node's (where an unwrapped parameter or a LayerNorm is cut)."""
    fn = getattr(handler, "__self__", None)
    out = getattr(handler, "__name__", "") == "prune_out_channels"
    own = [p for p in module.parameters(recurse=False)] if isinstance(module, nn.Module) else []
    if isinstance(fn, tpf.DepthwiseConvPruner):  # in and out channel are one: the filter row
        return [_along(p, 0, idxs) for p in own]
    if isinstance(fn, tpf.ConvPruner):
        w, b = module.weight, module.bias
        rows = 1 if module.transposed else 0
        if out:
            return [_along(w, rows, idxs)] + ([_along(b, 0, idxs)] if b is not None else [])
        # a grouped conv's weight holds in_channels / groups columns, the same in every block
        return [_along(w, 1 - rows, idxs, producer=False,
                       positions=idxs % (module.in_channels // module.groups))]
    if isinstance(fn, tpf.LinearPruner):
        if out:
            return [_along(p, 0, idxs) for p in own]
        return [_along(module.weight, 1, idxs, producer=False)]
    if isinstance(fn, (tpf.BatchnormPruner, tpf.InstanceNormPruner, tpf.GroupNormPruner)):
        return [_along(p, 0, idxs, norm=True) for p in own]
    if isinstance(fn, tpf.PReLUPruner):  # one slope per channel, or one shared by all
        return [_along(module.weight, 0, idxs)] if module.num_parameters > 1 else []
    if isinstance(fn, tpf.LayernormPruner):
        if len(module.normalized_shape) < -pruning_dim:
            return []
        return [_along(p, pruning_dim, idxs, norm=True) for p in own]
    if isinstance(fn, tpf.EmbeddingPruner):
        return [_along(module.weight, 1, idxs)]
    if isinstance(fn, tpf.ParameterPruner):  # an unwrapped nn.Parameter (ViT's class token)
        return [_along(module, pruning_dim, idxs)]
    if isinstance(fn, tpf.MultiheadAttentionPruner):
        return _attention_slices(module, idxs)
    if own:
        raise NotImplementedError(
            f"layer {name!r} ({type(module).__name__}) is in a dependency group, but dpm_lab "
            f"cannot decay its parameters (pruning function {type(fn).__name__}): pass it in "
            f"ignored_layers=[model.{name}] to leave its group out, or open an issue")
    return []  # parameter-free nodes: adds, activations, reshapes, concatenations


def _attention_slices(mha: nn.MultiheadAttention, idxs: torch.Tensor) -> list[_Slice]:
    """``nn.MultiheadAttention`` pruned along its embedding dimension, as Torch-Pruning's
    ``MultiheadAttentionPruner`` does: channel ``i`` is row ``i`` of each of q, k and v in the
    packed input projection, column ``i`` of it, and row and column ``i`` of the output
    projection."""
    E, n = mha.embed_dim, len(idxs)
    qkv_rows = torch.cat([idxs, idxs + E, idxs + 2 * E])
    qkv_item = torch.arange(n).repeat(3)
    out = []
    for p, producer in ((mha.in_proj_weight, True), (mha.in_proj_bias, True)):
        if p is not None:
            out.append(_Slice(p, 0, qkv_rows, qkv_item, producer))
    if mha.in_proj_weight is not None:
        out.append(_along(mha.in_proj_weight, 1, idxs, producer=False))
    for p in (mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight):
        if p is not None:
            out.append(_along(p, 0, idxs))
    for p in (mha.bias_k, mha.bias_v):
        if p is not None:
            out.append(_along(p, 2, idxs))
    proj = mha.out_proj
    out.append(_along(proj.weight, 0, idxs))
    if proj.bias is not None:
        out.append(_along(proj.bias, 0, idxs))
    out.append(_along(proj.weight, 1, idxs, producer=False))
    return out


def _channel_groups(module, handler) -> int:
    """Blocks a layer splits the group's channels into, as Torch-Pruning's ``BasePruner``
    counts them (grouped convs, GroupNorm; depthwise convs are one channel per block and need
    none); attention splits its embedding into heads."""
    fn = getattr(handler, "__self__", None)
    if isinstance(fn, tpf.MultiheadAttentionPruner):
        return module.num_heads
    if isinstance(fn, tpf.DepthwiseConvPruner) or not hasattr(fn, "get_out_channel_groups"):
        return 1
    if isinstance(module, nn.Conv2d) and module.groups == module.out_channels:
        return 1  # Torch-Pruning's BasePruner skips these too
    out = getattr(handler, "__name__", "") == "prune_out_channels"
    return fn.get_out_channel_groups(module) if out else fn.get_in_channel_groups(module)


GRANULARITIES = ("channel", "head")


def attention_heads(model: nn.Module) -> dict[nn.Module, int]:
    """``{qkv layer: number of heads}`` of every attention module written the timm way (a
    ``qkv`` ``nn.Linear`` child and a ``num_heads`` attribute), as Torch-Pruning's ``num_heads``
    argument takes it; :class:`dpm_lab.training.models.attention.QKVAttention` is one."""
    return {m.qkv: int(m.num_heads) for m in model.modules()
            if isinstance(getattr(m, "qkv", None), nn.Linear) and hasattr(m, "num_heads")}


def _head_position(qkv: nn.Linear, heads: int) -> torch.Tensor:
    """Head of each of ``qkv``'s output rows: rows are [q | k | v], each ``heads`` blocks wide."""
    width = qkv.out_features // 3
    if qkv.out_features % 3 or width % heads:
        raise ValueError(f"qkv layer with {qkv.out_features} outputs does not split into q, k, v "
                         f"of {heads} heads each")
    return (torch.arange(qkv.out_features) % width) // (width // heads)


class ChannelGroups:
    """All prunable structures of ``model`` and the vectorised operations over them.

    ``example_inputs`` traces the model (Torch-Pruning needs grad mode on). The output layer is
    ignored unless ``ignored_layers`` says otherwise. ``groups_tp`` keeps Torch-Pruning's group
    objects for importance scoring; they stay valid while no layer changes shape.

    ``consumers=False`` keeps only the producer side of each structure (conv/linear output rows
    and biases, BN γ and β) and leaves out the consumers' input columns: that is OTOv2's
    *zero-invariant group*, the smallest set whose zeroing already silences the channel (the
    consumers then multiply an exact zero). Removal is the same either way.

    ``granularity``: ``"channel"`` (default) prunes channels of every group except the inner
    width of attention written with a ``qkv`` projection (removing one row of q leaves q, k and
    v unequal, so such attention is pruned by heads only); ``"head"`` prunes only whole heads of
    that attention, one structure per head, as Torch-Pruning's ``prune_num_heads`` does.
    ``num_heads``: ``{qkv layer: heads}``, Torch-Pruning's argument of that name (default:
    :func:`attention_heads`). ``nn.MultiheadAttention`` has no removable heads; convert it with
    :func:`dpm_lab.training.models.attention.split_attention` first.
    """

    def __init__(self, model: nn.Module, example_inputs: torch.Tensor, ignored_layers=None,
                 consumers: bool = True, unwrapped_parameters=None, granularity: str = "channel",
                 num_heads: dict | None = None):
        if granularity not in GRANULARITIES:
            raise ValueError(f"granularity {granularity!r} is not one of {', '.join(GRANULARITIES)}")
        heads = attention_heads(model) if num_heads is None else dict(num_heads)
        if granularity == "head" and not heads:
            raise ValueError(
                "granularity='head' found no attention with a separate qkv projection in this "
                "model; nn.MultiheadAttention cannot lose a head (its inner width is embed_dim): "
                "convert it with dpm_lab.training.models.attention.split_attention(model), or pass "
                "num_heads={qkv_layer: heads}")
        self.model, self.consumers, self.granularity = model, consumers, granularity
        self.names = {m: n for n, m in model.named_modules()}
        self.names.update({p: n for n, p in model.named_parameters()})
        ignored = list(ignored_layers) if ignored_layers is not None else [output_layer(model)]
        with torch.enable_grad():
            self.DG = tp.DependencyGraph().build_dependency(
                model, example_inputs, verbose=False, unwrapped_parameters=unwrapped_parameters)
        groups_tp = self.DG.get_all_groups(ignored_layers=ignored,
                                           root_module_types=[nn.Conv2d, nn.Linear])
        self.groups_tp = [g for g in groups_tp
                          if (g[0].dep.target.module in heads) == (granularity == "head")]
        self.groups: list[Group] = []
        entries: dict[tuple[int, int], _Entry] = {}
        offset = 0
        for g in self.groups_tp:
            root = g[0].dep.target.module
            channels = len(g[0].idxs)
            if root in heads:
                ch_groups, position = 1, _head_position(root, heads[root])
            else:
                ch_groups = max(_channel_groups(item.dep.target.module, item.dep.handler)
                                for item in g)
                if channels % ch_groups:
                    raise NotImplementedError(f"group rooted at {self.names[root]} has {channels} "
                                              f"channels, not a multiple of its {ch_groups} "
                                              "channel blocks")
                # root channel r is position r % size of its block
                position = torch.arange(channels) % (channels // ch_groups)
            size = int(position.max()) + 1
            members, exact = [], True
            for item in g:
                module = item.dep.target.module
                idxs = torch.as_tensor(item.idxs, dtype=torch.long)
                structure = offset + position[torch.as_tensor(item.root_idxs, dtype=torch.long)]
                slices = [sl for sl in _slices(module, item.dep.handler, idxs,
                                               self.names.get(module, ""), item.dep.target.pruning_dim)
                          if consumers or sl.producer]
                if not slices:
                    continue
                members.append(self.names[module])
                exact &= not isinstance(item.dep.handler.__self__,
                                        _MIXING_NORMS + (tpf.MultiheadAttentionPruner,))
                for sl in slices:
                    key = (id(sl.param), sl.dim)
                    if key not in entries:
                        entries[key] = _Entry(sl.param, sl.dim,
                                              torch.full((sl.param.shape[sl.dim],), -1, dtype=torch.long),
                                              producer=sl.producer, bn=sl.norm)
                    owner, want = entries[key].owner, structure[sl.item]
                    clash = (owner[sl.positions] >= 0) & (owner[sl.positions] != want)
                    if clash.any():
                        raise NotImplementedError(f"{self.names[module]} dim {sl.dim} is shared by "
                                                  "two structures")
                    owner[sl.positions] = want
            self.groups.append(Group(self.names[root], size, offset, members, position,
                                     ch_groups, exact, "head" if root in heads else "channel"))
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
               rest_factor: torch.Tensor | None = None, entries=None) -> None:
        """Multiply every structure's slices by ``factor[structure]`` in place (``[S]``).

        ``entries``: the slices that take ``factor`` (default: all); every other slice takes
        ``rest_factor`` (default: ``factor`` too). Smooth Pruning decays its scope's slices by the
        schedule and the rest by 0/1 this way. With ``optimizer`` and ``optimizer_state_mask``,
        the optimiser's per-parameter buffers (momentum, Adam moments) are multiplied by the mask
        too, so they cannot revive a slice.
        """
        f = self.pad(factor)
        fr = f if rest_factor is None else self.pad(rest_factor)
        chosen = None if entries is None else {id(e) for e in entries}
        mask = None if optimizer_state_mask is None else self.pad(optimizer_state_mask)
        with torch.no_grad():
            for e in self.entries:
                p = e.param
                p.mul_(self.expand(f if chosen is None or id(e) in chosen else fr, e).to(p.dtype))
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
        """Scores of all structures (``[S]``) from a Torch-Pruning importance object, group by
        group.
        Higher = more important. Gradient-based importances need ``.grad`` populated first."""
        scores = []
        for g, meta in zip(self.groups_tp, self.groups):
            imp = importance(g).detach().float().cpu()  # one score per root channel
            per = torch.zeros(meta.size).index_add_(0, meta.position, imp)
            scores.append(per / torch.bincount(meta.position, minlength=meta.size))
        return torch.cat(scores)

    def structure_ids(self, root: str, idxs) -> torch.Tensor:
        """Global structure ids (sorted, unique) of channels ``idxs`` of the group rooted at
        layer ``root``."""
        by_root = {g.root: g for g in self.groups}
        if root not in by_root:
            raise KeyError(f"{root!r} roots no group here; roots: {', '.join(by_root)}")
        g = by_root[root]
        return (g.offset + g.position[torch.as_tensor(list(idxs), dtype=torch.long)]).unique()

    def split(self, structure_ids) -> dict[str, list[int]]:
        """``{root layer name: sorted channel indices}`` for a set of structure ids (a structure
        of a group with channel blocks is its position in every block; a head is its q, k and v
        rows)."""
        ids = np.asarray(sorted(int(i) for i in structure_ids), dtype=np.int64)
        out = {}
        for g in self.groups:
            sel = ids[(ids >= g.offset) & (ids < g.offset + g.size)] - g.offset
            if len(sel):
                out[g.root] = np.flatnonzero(np.isin(g.position.numpy(), sel)).tolist()
        return out

