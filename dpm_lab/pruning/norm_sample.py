"""A record-sized sample of Smooth Pruning's norm trajectories.

Why: the schedule that pins each selected structure's norm to (N − n)/N · L_init, and the
structures that Self-Rectifying lets go, are what DPM *is*. A committed figure of them must come
from committed records (``python -m dpm_lab figures``), and every structure's norm at every step
is far too much for a record. So :class:`NormSample` traces, on the device, the norms of every
structure that the first selection round chose and of ``k`` never-chosen ones, for the round's
decay and as long again after it. At the end, :meth:`NormSample.record` keeps ``k`` chosen
structures spread over L_init, every chosen one that Self-Rectifying released, and the ``k`` free
ones, each as norms relative to its first value (L_init for the chosen ones).
"""
from __future__ import annotations

import torch

from ..training.engine import Hook, TrainState
from .decay import FREE, RELEASED, SmoothPruning


class NormSample(Hook):
    """Trace ``pruner``'s first round: list it after the pruner in ``fit``'s hooks, so it reads
    the norms the pruner has just set. Row n of the trace is the norm after n decay applications
    (row 0: before the first, i.e. L_init), for ``2 N`` applications. ``k``: how many chosen and
    how many free structures the record keeps (the free ones drawn with ``seed``). Only a first
    round at fit start is traced (the core's rounds start at step 0); otherwise the record is
    ``None``. With N = 1 the chosen rows are L_init, then zero. A structure counts as released if
    Self-Rectifying released it at any traced step, even if a later round chose it again. One
    gather per step, on the device, with no host sync. Its state is optional on resume
    (``optional_state``): a checkpoint written before this hook existed resumes, with no record.
    """

    optional_state = True

    def __init__(self, pruner: SmoothPruning, k: int = 8, seed: int = 0):
        if k < 1:
            raise ValueError(f"k must be >= 1 (structures kept per role), got {k!r}")
        self.pruner, self.k, self.seed = pruner, k, seed
        self.rows = 2 * pruner.decay_steps + 1
        self.ids: torch.Tensor | None = None
        self.chosen = 0
        self.trace: list[torch.Tensor] = []
        self.released: torch.Tensor | None = None   # bool per traced structure, on the device

    def on_fit_start(self, state: TrainState) -> None:
        status = self.pruner.status
        chosen = (status != FREE).nonzero().flatten()           # once, at fit start
        if not len(chosen):
            return
        free = (status == FREE).nonzero().flatten()
        draw = torch.randperm(len(free), generator=torch.Generator().manual_seed(self.seed))
        free = free[draw[:self.k].to(free.device)]
        self.ids, self.chosen = torch.cat([chosen, free]), len(chosen)
        norms = self.pruner.norms()[self.ids]
        self.trace = [torch.cat([self.pruner.l_init[chosen], norms[len(chosen):]]), norms]
        self.released = torch.zeros(len(self.ids), dtype=torch.bool, device=self.ids.device)

    def after_step(self, state: TrainState) -> None:
        if self.ids is not None and len(self.trace) < self.rows:
            self.trace.append(self.pruner.norms()[self.ids])
            self.released |= self.pruner.status[self.ids] == RELEASED

    def record(self) -> dict | None:
        """What a result record keeps (see the module docstring): ``structures`` (ids), ``role``
        (``chosen``, ``released`` or ``free``), ``l_init`` (first norm) and ``relative`` (one
        list per structure: norm / first norm after n = 0, 1, ... decay applications)."""
        if self.ids is None:
            return None
        trace = torch.stack([t.cpu() for t in self.trace]).double()   # [rows, chosen + free]
        ids = self.ids.cpu()
        first = trace[0]
        c = self.chosen
        spread = first[:c].argsort()[torch.linspace(0, c - 1, min(self.k, c)).round().long()]
        released = self.released[:c].cpu().nonzero().flatten()
        keep = torch.cat([torch.unique(torch.cat([spread, released])),
                          torch.arange(c, len(ids))])
        role = ["released" if i in set(released.tolist()) else "chosen" if i < c else "free"
                for i in keep.tolist()]
        relative = trace[:, keep] / first[keep].clamp_min(1e-12)
        return {"decay_steps": self.pruner.decay_steps, "structures": ids[keep].tolist(),
                "role": role, "l_init": first[keep].tolist(),
                "relative": [[round(v, 5) for v in col] for col in relative.T.tolist()]}

    def state_dict(self) -> dict:
        return {"ids": self.ids, "chosen": self.chosen, "trace": self.trace,
                "released": self.released}

    def load_state_dict(self, state: dict) -> None:
        """Checkpoints load on the CPU: move the state to the pruner's device (restored first)."""
        device = self.pruner.status.device
        self.chosen = state["chosen"]
        self.ids, self.released = (None if state[k] is None else state[k].to(device)
                                   for k in ("ids", "released"))
        self.trace = [t.to(device) for t in state["trace"]]
