"""A record-sized sample of Smooth Pruning's norm trajectories.

Why: the schedule that pins each selected structure's norm to (N − n)/N · L_init, and the
structures that Self-Rectifying lets go, are what DPM *is*. A committed figure of them must come
from committed records (``python -m dpm_lab figures``), and every structure's norm at every step
is far too much for a record. So :class:`NormSample` traces, on the device, the norms of every
structure that the first selection round chose and of ``k`` never-chosen ones, for the round's
decay and as long again after it. At the end, :meth:`NormSample.record` keeps ``k`` chosen
structures spread over L_init, ``k`` of those that Self-Rectifying released (spread over L_init
too; their total is kept), and the ``k`` free ones, each as norms relative to its first value
(L_init for the chosen ones), at no more than ``points`` decay applications n spread over 0..2N
(0, N and 2N always among them). Both bounds keep a record's size independent of N and of how
many structures Self-Rectifying released: a run at N = 780 that released 114 of them once wrote
1.7 MB of trace. :func:`thin` applies the same bounds to a record written before them.
"""
from __future__ import annotations

import torch

from ..training.engine import Hook, TrainState
from .decay import FREE, RELEASED, SmoothPruning


def _spread(values: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of ``min(k, len(values))`` entries evenly spread over ``values``' sorted order."""
    if not len(values):
        return torch.zeros(0, dtype=torch.long)
    return values.argsort()[torch.linspace(0, len(values) - 1, min(k, len(values))).round().long()]


def sample_steps(decay_steps: int, points: int) -> list[int]:
    """At most ``points`` decay applications n in 0..2N, evenly spread over each half, with
    0, N and 2N among them (where the schedule starts, reaches zero and the trace ends)."""
    if points < 3:
        raise ValueError(f"points must be >= 3 (n = 0, N and 2N), got {points!r}")
    half = (points + 1) // 2   # the first half's points; N ends it and starts the second
    n = torch.cat([torch.linspace(0, decay_steps, half),
                   torch.linspace(decay_steps, 2 * decay_steps, points + 1 - half)])
    return sorted(set(n.round().long().tolist()))


def thin(sample: dict, k: int = 8, points: int = 201) -> dict:
    """``sample`` (a record's ``norm_sample``) within the bounds :meth:`NormSample.record`
    applies: ``k`` released structures spread over L_init (``released_total`` keeps how many there
    were) and the ``points`` decay applications of :func:`sample_steps` (listed in ``steps``). A
    sample already within them comes back unchanged, so thinning twice equals thinning once."""
    steps = sample.get("steps", list(range(len(sample["relative"][0]))))
    role = sample["role"]
    released = [i for i, r in enumerate(role) if r == "released"]
    keep_released = {released[i] for i in _spread(
        torch.tensor([sample["l_init"][i] for i in released], dtype=torch.float64), k).tolist()}
    keep = [i for i, r in enumerate(role) if r != "released" or i in keep_released]
    wanted = set(sample_steps(sample["decay_steps"], points))
    rows = [j for j, n in enumerate(steps) if n in wanted]
    return {"decay_steps": sample["decay_steps"],
            "structures": [sample["structures"][i] for i in keep],
            "role": [role[i] for i in keep], "l_init": [sample["l_init"][i] for i in keep],
            "released_total": sample.get("released_total", len(released)),
            "steps": [steps[j] for j in rows],
            "relative": [[sample["relative"][i][j] for j in rows] for i in keep]}


class NormSample(Hook):
    """Trace ``pruner``'s first round: list it after the pruner in ``fit``'s hooks, so it reads
    the norms the pruner has just set. Row n of the trace is the norm after n decay applications
    (row 0: before the first, i.e. L_init), for ``2 N`` applications. ``k``: how many chosen, how
    many released and how many free structures the record keeps (the free ones drawn with
    ``seed``). Only a first
    round at fit start is traced (the core's rounds start at step 0); otherwise the record is
    ``None``. ``points``: the most decay applications a record keeps (see :func:`sample_steps`).
    With N = 1 the chosen rows are L_init, then zero. A structure counts as released if
    Self-Rectifying released it at any traced step, even if a later round chose it again. One
    gather per step, on the device, with no host sync. Its state is optional on resume
    (``optional_state``): a checkpoint written before this hook existed resumes, with no record.
    """

    optional_state = True

    def __init__(self, pruner: SmoothPruning, k: int = 8, seed: int = 0, points: int = 201):
        if k < 1:
            raise ValueError(f"k must be >= 1 (structures kept per role), got {k!r}")
        sample_steps(1, points)   # refuses points < 3 before a run starts
        self.pruner, self.k, self.seed, self.points = pruner, k, seed, points
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
        (``chosen``, ``released`` or ``free``), ``l_init`` (first norm), ``released_total``,
        ``steps`` (the decay applications n kept) and ``relative`` (one list per structure:
        norm / first norm after each n of ``steps``)."""
        if self.ids is None:
            return None
        trace = torch.stack([t.cpu() for t in self.trace]).double()   # [rows, chosen + free]
        ids = self.ids.cpu()
        first = trace[0]
        c = self.chosen
        released = self.released[:c].cpu()
        spread = _spread(first[:c], self.k)
        keep = torch.cat([torch.unique(torch.cat([spread, released.nonzero().flatten()])),
                          torch.arange(c, len(ids))])
        role = ["free" if i >= c else "released" if released[i] else "chosen"
                for i in keep.tolist()]
        relative = trace[:, keep] / first[keep].clamp_min(1e-12)
        return thin({"decay_steps": self.pruner.decay_steps, "structures": ids[keep].tolist(),
                     "role": role, "l_init": first[keep].tolist(),
                     "relative": [[round(v, 5) for v in col] for col in relative.T.tolist()]},
                    self.k, self.points)

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
