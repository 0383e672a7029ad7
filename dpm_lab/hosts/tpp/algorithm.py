"""Trainability Preserving Pruning (TPP; Wang & Fu, ICLR 2023) as a training hook.

TPP chooses the filters to prune once, before training, by their L1 magnitude with a ratio per
layer (:func:`layerwise_selection`). Then it regularises instead of cutting: for each pruned
layer, with ``W`` its filters flattened to rows and ``G = W Wᵀ`` their Gram matrix, every entry
of ``G`` that touches a pruned filter (its row and its column, diagonal included) is pushed to
zero, which decorrelates the pruned filters from the kept ones while leaving the kept–kept
correlations free. Beside it, an L2 pull on the pruned filters' weights and biases and on their
BN γ and β drives the whole channel to zero. Both grow on one ramp r(t); when the ramp is full
the penalty is held (stabilise phase) while the pruned slices are hard-zeroed layer by layer;
then the zero channels are removed and the network fine-tuned (the paper's schedule, as the
official code github.com/MingSun-Tse/TPP, ``pruner/opp_pruner.py``, runs it).

The official code's loss is the mean squared error between ``G`` and a detached copy with the
pruned rows and columns zeroed, weighted by ``gram_weight · r(t)``:
``L = gram_weight · r · Σ_ij M_ij G_ij² / C²`` with ``M_ij = 1`` where filter i or j is pruned.
Its gradient is ``4 · gram_weight · r / C² · (M ⊙ G) W``: one Gram product and one matmul per
layer per step, added to the gradients in ``before_step``; no loop over filters. The L2 pull
adds ``r · w`` to the pruned producer slices' gradients (conv rows, biases, BN γ/β), as the code
adds it to ``.grad``.

The ramp: r = Δ · ⌊t / K_u⌋, capped at ``r_max``; the code's Δ = 1e-4 and K_u = 10 reach
r_max = 1 after 100k steps. Here the ramp is given by its length ``ramp_steps`` (Δ =
r_max · K_u / ramp_steps), so a short profile can run the same shape. In the stabilise phase
(``stabilize_steps`` after the ramp), layer l of the pruned layers (in network order) has its
pruned slices zeroed at every step from stabilise step (l + 1) · ``zero_interval`` on.
``zero_out=False`` leaves them to decay instead: TPP × DPM hands them to Smooth Pruning.
"""
from __future__ import annotations

import fnmatch

import torch

from ...pruning.groups import ChannelGroups
from ...training.engine import Hook, TrainState


def filter_l1(groups: ChannelGroups) -> torch.Tensor:
    """Per structure, the mean |w| of its root layer's filters (TPP's criterion: the filter
    alone, not its BN or its consumers), ``[S]``."""
    out = []
    for g in groups.groups:
        w = groups.model.get_submodule(g.root).weight.detach()
        per_channel = w.abs().flatten(1).mean(1).float().cpu()
        sums = torch.zeros(g.size).index_add_(0, g.position, per_channel)
        out.append(sums / torch.bincount(g.position, minlength=g.size))
    return torch.cat(out)


def layerwise_selection(groups: ChannelGroups, ratio: float, layers: str | list[str],
                        exclude: str | list[str] = ()) -> torch.Tensor:
    """Structure ids TPP prunes: in every group whose root layer name matches a ``layers``
    pattern (``fnmatch``, e.g. ``"layer*.conv1"``, TPP's ResNet-56 choice) and no ``exclude``
    pattern, the ``⌊ratio · size⌋`` structures of smallest filter L1 (at least one kept)."""
    if not 0 <= ratio < 1:
        raise ValueError(f"layer-wise pruning ratio must be in [0, 1), got {ratio!r}")
    layers = [layers] if isinstance(layers, str) else list(layers)
    exclude = [exclude] if isinstance(exclude, str) else list(exclude)
    chosen = [g for g in groups.groups
              if any(fnmatch.fnmatch(g.root, p) for p in layers)
              and not any(fnmatch.fnmatch(g.root, p) for p in exclude)]
    if not chosen:
        raise ValueError(f"no group's root layer matches {layers}; roots are e.g. "
                         f"{', '.join(g.root for g in groups.groups[:4])}")
    l1 = filter_l1(groups)
    ids = []
    for g in chosen:
        k = min(int(ratio * g.size + 1e-9), g.size - 1)
        ids.append(g.offset + l1[g.offset:g.offset + g.size].argsort()[:k])
    return torch.cat(ids).sort().values


class ReplaceReleased:
    """TPP × DPM's selection with ``--released replace``, as a :class:`SmoothPruning` selector:
    the chosen filters ``ids`` at the first round; at every later round, in each layer, as many
    filters of smallest L1 (now) as Self-Rectifying released there since the round before: free
    ones first, then released ones once no free one is left.
    So each layer ends at its ratio, as the core's rounds keep their MACs target; without it a
    released filter is simply kept (TPP selects once) and the network ends larger. Runs at the
    rounds only (one host sync each), never per step."""

    def __init__(self, groups: ChannelGroups, ids: torch.Tensor):
        self.groups, self.ids = groups, ids
        self.started = False
        self.replaced = torch.zeros(groups.num_structures, dtype=torch.bool)

    def __call__(self, pruner, step: int) -> torch.Tensor:
        from ...pruning.decay import FREE, RELEASED

        if not self.started:
            self.started = True
            return self.ids
        status = pruner.status.cpu()
        new = (status == RELEASED) & ~self.replaced
        self.replaced |= new
        l1, picks = filter_l1(self.groups), []
        for g in self.groups.groups:
            count = int(new[g.offset:g.offset + g.size].sum())
            if count:  # free filters first, then released ones (as the core's select does)
                here = status[g.offset:g.offset + g.size]
                ranked = [(here == kind).nonzero().flatten() for kind in (FREE, RELEASED)]
                ranked = torch.cat([c[l1[g.offset + c].argsort()] for c in ranked])
                picks.append(g.offset + ranked[:count])
        picks = torch.cat(picks) if picks else torch.zeros(0, dtype=torch.long)
        self.replaced[picks] = False  # a re-picked filter released again is replaced again
        return picks

    def state_dict(self) -> dict:
        return {"started": self.started, "replaced": self.replaced}

    def load_state_dict(self, state: dict) -> None:
        self.started, self.replaced = state["started"], state["replaced"]


class TPPRegularizer(Hook):
    """TPP's regularisation phase (module docstring) over the structures ``pruned_ids``.

    ``ramp_steps``: steps until r reaches ``r_max``; ``stabilize_steps``: steps it is held after
    (the phase lasts ``ramp_steps + stabilize_steps``; :attr:`steps`). ``update_interval``: K_u.
    ``gram_weight``: the Gram term's weight at r = 1 (code: 1000). ``zero_interval``: stabilise
    steps between two layers' hard zeroing. ``zero_out``: hard-zero in the stabilise phase.
    """

    def __init__(self, groups: ChannelGroups, pruned_ids, ramp_steps: int, stabilize_steps: int,
                 update_interval: int = 10, r_max: float = 1.0, gram_weight: float = 1000.0,
                 zero_interval: int = 100, zero_out: bool = True):
        for name, v in (("ramp_steps", ramp_steps), ("update_interval", update_interval),
                        ("zero_interval", zero_interval)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if not isinstance(stabilize_steps, int) or stabilize_steps < 0:
            raise ValueError(f"stabilize_steps must be an integer >= 0, got {stabilize_steps!r}")
        if r_max <= 0 or gram_weight < 0:
            raise ValueError(f"need r_max > 0 and gram_weight >= 0, got {r_max!r}, {gram_weight!r}")
        self.groups, self.ramp_steps, self.stabilize_steps = groups, ramp_steps, stabilize_steps
        self.update_interval, self.r_max, self.gram_weight = update_interval, r_max, gram_weight
        self.zero_out, self.delta = zero_out, r_max * update_interval / ramp_steps
        S = groups.num_structures
        self.pruned = torch.zeros(S, dtype=torch.bool)
        self.pruned[torch.as_tensor(pruned_ids, dtype=torch.long)] = True
        # per pruned layer: its weight and a [C] float mask of its pruned root channels; and,
        # per structure, the stabilise step from which it is hard-zeroed (layer order)
        self.layers = []
        self.zero_from = torch.full((S,), torch.iinfo(torch.long).max, dtype=torch.long)
        for g in groups.groups:
            sel = self.pruned[g.offset:g.offset + g.size]
            if sel.any():
                weight = groups.model.get_submodule(g.root).weight
                self.layers.append((weight, sel[g.position]))
                self.zero_from[g.offset:g.offset + g.size] = len(self.layers) * zero_interval

    @property
    def steps(self) -> int:
        """Length of the regularisation phase: ramp + stabilise."""
        return self.ramp_steps + self.stabilize_steps

    def r(self, step: int) -> float:
        """The penalty factor r(t) after ``step`` optimiser steps."""
        return min(self.r_max, self.delta * (step // self.update_interval))

    def on_fit_start(self, state: TrainState) -> None:
        device = self.layers[0][0].device if self.layers else torch.device("cpu")
        self.groups.to(device)
        self.pruned, self.zero_from = self.pruned.to(device), self.zero_from.to(device)
        self.layers = [(w, m.to(w.device)) for w, m in self.layers]

    @torch.no_grad()
    def penalty_gradients_(self, r: float) -> None:
        """Add the Gram and L2 terms' gradients at factor ``r`` to the parameters' ``.grad``."""
        if r == 0:
            return
        for weight, pruned in self.layers:
            if weight.grad is None:
                continue
            W = weight.flatten(1)
            keep = (~pruned).to(W.dtype)
            touched = 1 - keep[:, None] * keep[None, :]          # M: row or column pruned
            C = W.shape[0]
            grad = (touched * (W @ W.T)) @ W * (4 * self.gram_weight * r / C ** 2)
            weight.grad.add_(grad.view_as(weight))
        mask = self.groups.pad(self.pruned.to(self.groups.dtype), 0.0)
        for e in self.groups.producer_entries():
            if e.param.grad is not None:
                e.param.grad.add_(r * e.param * self.groups.expand(mask, e).to(e.param.dtype))

    def before_step(self, state: TrainState) -> None:
        self.penalty_gradients_(self.r(state.step))

    def after_step(self, state: TrainState) -> None:
        s = state.step - self.ramp_steps
        if self.zero_out and s >= 0:
            self.zero_(self.pruned & (self.zero_from <= s), state.optimizer)

    def zero_(self, structures: torch.Tensor, optimizer=None) -> None:
        """Hard-zero the producer slices (filters, biases, BN γ/β) of the ``structures`` mask,
        and their optimiser buffers; that silences the channel (consumers read a zero)."""
        keep = (~structures).to(self.groups.dtype)
        self.groups.scale_(keep, keep, optimizer, rest_factor=torch.ones_like(keep),
                           entries=self.groups.producer_entries())
