"""Smooth Pruning (SP): selected structures decay to exactly zero over N optimiser steps.

When a structure is selected, its L2 norm L_init (over all its coupled slices) is recorded. From
then on, after every optimiser step, the structure is rescaled so that its norm equals
(N − n)/N · L_init, n = number of decay applications so far, keeping the direction the optimiser
gave; the N-th application makes it exactly zero. Timing (our choice, the paper is silent): the
first application happens at selection itself, then one after each following optimiser step.
So N = 1 zeroes at selection — exactly single-step pruning — and a structure selected at step k is
zero after step k + N − 1. Structures selected in different rounds decay independently.

Zero structures are multiplied by 0 after every step, and their optimiser buffers (momentum,
Adam moments) too, so neither momentum nor weight decay can revive them. Decaying structures keep
non-zero weights until their last step, which is what lets Self-Rectifying see their gradients.

What decays (``scope``, our choice): by default (``"producer"``) the slices that *make* the
channel: conv/linear output rows and biases and the BN's γ and β. The consumers' input columns
are left alone while the channel fades (they multiply its output, which shrinks with the factor)
and are zeroed with it at the N-th step. Each weight entry is then scaled by one structure only:
a conv entry W[r, c] belongs to row r's structure while decaying, never also to column c's, so
every structure's norm follows (N − n)/N · L_init exactly, also when structures that share
entries decay together, and a channel's output fades linearly in the factor, as under OTOv2's
projection. ``scope="group"`` scales every slice of the dependency group, consumer columns
included (the earlier behaviour): an entry shared by two decaying structures then gets both
factors, its structures fall below the schedule, and the channel's function fades as f².
A host may name its own slices instead (``entries``): Gate Decorator decays only its gates
(``scope="gate"``), the channel's scale, and zeroes the rest with them at the N-th step.

By default the hook also owns *when and what* to select: ``rounds`` (optimiser-step counts;
0 = at fit start) at which :func:`select` tops the selection up to ``target``, given the importance
criterion. A host framework replaces that choice in one of two ways: a ``selector`` called at the
rounds (DepGraph's progressive pruner), or :meth:`SmoothPruning.request` from inside its own
update (OTOv2's half-space projection), which starts the decay at the next ``after_step``.
With Self-Rectifying, releases are allowed only before ``release_until`` (default: the last
round), so every released structure is replaced later and the target holds at the end.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..training.engine import Hook, TrainState
from ..training.metrics import macs_params
from .groups import ChannelGroups
from .rectify import SelfRectifying, check_release_window
from .selection import ChannelRatio, MacsTarget, make_importance, scores, select

FREE, DECAYING, PRUNED, RELEASED = 0, 1, 2, 3
SCOPES = ("producer", "group")


class SmoothPruning(Hook):
    """SP (and, with ``rectifier``, full DPM = SP + SR) as a training hook.

    ``groups``: the model's :class:`ChannelGroups`. ``target``: :class:`ChannelRatio` or
    :class:`MacsTarget`. ``decay_steps``: N. ``criterion``: importance name (see
    ``selection.CRITERIA``). ``rounds``: optimiser-step counts at which to (re)select.
    ``trace=True`` keeps every structure's norm after every step (for plots; costs memory).
    ``scope``: ``"producer"`` (default) or ``"group"``: which slices decay (module docstring).
    ``entries``: a host's own choice of the slices that decay (a subset of ``groups.entries``);
    ``scope`` is then only its name in the record. The other slices keep their values until the
    N-th step and are zeroed with it.
    ``selector(pruner, step) -> ids``: the host's choice at a round, instead of :func:`select`
    (then ``target`` must be ``None``: the host owns the target).
    ``release_until``: Self-Rectifying may release only before this optimiser step (default: the
    last round; a host that requests structures itself sets it). With a ``rectifier`` it must be
    > 0, else nothing could ever be released (raises). A decaying structure is observed by
    Self-Rectifying after each of the N − 1 optimiser steps that follow its selection, and a
    release needs ``rectifier.window`` observations, so N ≥ 2 needs window < N, and the first
    possible release (window steps after the earliest decay begins: the first of ``rounds``;
    without rounds, step 1, the earliest a host's :meth:`request` takes effect) must come before
    ``release_until``; either violation raises, naming the values. With ``rounds``, decays are
    taken to begin at the rounds: no host both has rounds and requests. N = 1 with a rectifier is
    allowed: nothing decays across a step, so DPM at N = 1 is SP at N = 1 (hard removal at each
    round) by definition.

    From a custom training loop, call ``on_fit_start(state)`` once before the first step and
    ``after_step(state)`` after every ``optimizer.step()``, with ``state.step`` the 0-based index
    of the step just taken and ``state.optimizer`` the optimiser (see ``engine.TrainState``).
    """

    def __init__(self, groups: ChannelGroups, target: ChannelRatio | MacsTarget | None,
                 decay_steps: int, criterion: str = "l2", rounds: Sequence[int] = (0,),
                 rectifier: SelfRectifying | None = None, input_size=(1, 3, 32, 32),
                 trace: bool = False, selector=None, release_until: int | None = None,
                 scope: str = "producer", entries=None):
        if not isinstance(decay_steps, int) or decay_steps < 1:
            raise ValueError(f"decay_steps (N) must be an integer >= 1, got {decay_steps!r}")
        if any(r < 0 for r in rounds) or (not rounds and release_until is None):
            raise ValueError(f"rounds must be a list of steps >= 0 (empty only with "
                             f"release_until), got {rounds!r}")
        if entries is None and scope not in SCOPES:
            raise ValueError(f"unknown decay scope {scope!r}; choose one of: {', '.join(SCOPES)}")
        if selector is not None and target is not None:
            raise ValueError("give a target or a selector, not both: with a selector the host "
                             "decides what each round selects (pass target=None)")
        if selector is None and target is None and rounds:
            raise ValueError("selection rounds need a target (ChannelRatio or MacsTarget) or a "
                             "host's selector")
        self.groups, self.target, self.decay_steps, self.scope = groups, target, decay_steps, scope
        if entries is None:
            entries = groups.producer_entries() if scope == "producer" else None
        elif not entries:
            raise ValueError("entries is empty: Smooth Pruning needs the slices that decay")
        self.entries = entries
        self.criterion, self.importance = criterion, make_importance(criterion)
        self.rounds = sorted(set(int(r) for r in rounds))
        self.release_until = self.rounds[-1] if release_until is None else release_until
        if rectifier is not None and self.release_until <= 0:
            raise ValueError(
                f"Self-Rectifying could never release anything: releases are allowed only before "
                f"step {self.release_until} (the last selection round, which picks replacements "
                f"so the target holds). Give rounds after step 0, e.g. rounds=range(0, T, N) "
                f"over the first part of T training steps, or a release_until > 0 (got "
                f"release_until={release_until!r}).")
        if rectifier is not None:
            check_release_window(decay_steps, rectifier.window)
            # the earliest decay begins at the first round; without rounds, at step 1 (a host's
            # request takes effect at the next after_step, a host's own round() follows its
            # first training step); its window-th observation comes ``window`` steps later, and
            # must precede release_until
            first = self.rounds[0] if self.rounds else 1
            if decay_steps > 1 and first + rectifier.window >= self.release_until:
                raise ValueError(
                    f"Self-Rectifying could never release anything: a decay beginning at step "
                    f"{first} completes its window = {rectifier.window} observations at step "
                    f"{first + rectifier.window}, but releases are allowed only before step "
                    f"{self.release_until}. Give a shorter window, an earlier first round or a "
                    f"later release_until (a later last selection round)")
        self.selector = selector
        self.rectifier, self.input_size, self.trace = rectifier, input_size, trace
        self.dense_macs, self.dense_params = macs_params(groups.model, input_size)
        self.round_log: list[dict] = []
        self.norm_trace: list[torch.Tensor] = []
        self._allocate(next(groups.model.parameters()).device)

    def _allocate(self, device) -> None:
        S = self.groups.num_structures
        self.groups.to(device)
        self.status = torch.zeros(S, dtype=torch.int8, device=device)
        self.l_init = torch.zeros(S, device=device, dtype=self.groups.dtype)
        self.n_done = torch.zeros(S, dtype=torch.int64, device=device)
        self.pending = torch.zeros(S, dtype=torch.bool, device=device)
        self.pending_l_init = torch.full((S,), float("nan"), device=device, dtype=self.groups.dtype)
        if self.rectifier:
            self.rectifier.reset(S, device, self.groups.dtype)

    # ---- the hook ----

    def _follow_model_device(self) -> None:
        """Keep the per-structure state on the device the engine moved the model to."""
        device = next(self.groups.model.parameters()).device
        self.groups.to(device)
        self.status, self.l_init, self.n_done, self.pending, self.pending_l_init = (
            t.to(device) for t in (self.status, self.l_init, self.n_done, self.pending,
                                   self.pending_l_init))
        if self.rectifier:
            self.rectifier.to(device)

    def on_fit_start(self, state: TrainState) -> None:
        self._follow_model_device()
        if 0 in self.rounds:
            self.round(0, state.optimizer)

    def after_step(self, state: TrainState) -> None:
        done = state.step + 1
        self._apply(state.optimizer, step=done, release_allowed=done < self.release_until)
        if done in self.rounds:
            self.round(done, state.optimizer)

    # ---- selection and decay ----

    def round(self, step: int, optimizer=None) -> None:
        """Top the selection up to the target (host side; runs only at the given rounds)."""
        if self.rectifier:
            self.rectifier.flush(self.groups)
        taken = (self.status == DECAYING) | (self.status == PRUNED)
        if self.selector is not None:
            new = torch.as_tensor(self.selector(self, step), dtype=torch.long)
        else:
            new = select(self.groups, scores(self.groups, self.criterion, self.importance,
                                             exclude=self.status != FREE),
                         self.target,
                         taken=taken, released=self.status == RELEASED,
                         input_size=self.input_size, dense_macs=self.dense_macs)
        self.round_log.append({"step": step, "selected": len(new), "taken_before": int(taken.sum())})
        if len(new):
            self.start_decay(new.to(self.status.device), optimizer)

    def start_decay(self, ids: torch.Tensor, optimizer=None) -> None:
        """Begin decaying structures ``ids`` now: record L_init and apply the first step."""
        only = torch.zeros_like(self.status, dtype=torch.bool)
        only[ids] = True
        self._begin(only, self.norms())
        self._apply(optimizer, only=only)

    def request(self, mask: torch.Tensor, l_init: torch.Tensor | None = None,
                allow_released: bool = False) -> None:
        """A host asks that the structures in bool ``mask [S]`` start decaying. The decay starts
        at the next ``after_step`` (its first application then). ``l_init [S]``: the norms to
        pin the schedule to (e.g. the host's norm at its own pruning test); default: the norm the
        optimiser step left. ``allow_released``: released structures may be requested again.
        Device-side only: no host sync."""
        eligible = (self.status == FREE) | ((self.status == RELEASED) & allow_released)
        new = mask & eligible & ~self.pending
        if l_init is not None:
            self.pending_l_init = torch.where(new, l_init.to(self.l_init.dtype), self.pending_l_init)
        self.pending |= new

    def committed(self) -> torch.Tensor:
        """Bool ``[S]``: decaying, pruned or requested: structures on their way to zero."""
        return (self.status == DECAYING) | (self.status == PRUNED) | self.pending

    def _begin(self, mask: torch.Tensor, norm: torch.Tensor) -> None:
        self.l_init = torch.where(mask, norm, self.l_init)
        self.status = torch.where(mask, DECAYING, self.status)
        self.n_done = torch.where(mask, 0, self.n_done)
        if self.rectifier:
            self.rectifier.on_select(mask)

    def norms(self) -> torch.Tensor:
        """``[S]``: every structure's norm over the slices that decay (its ``scope``)."""
        return self.groups.squared_norms(entries=self.entries).sqrt()

    def _apply(self, optimizer, step: int = 0, release_allowed: bool = False, only=None) -> None:
        """One decay application to the decaying structures (all, or those in ``only``)."""
        N = self.decay_steps
        norm = self.norms()
        decaying = self.status == DECAYING
        if only is not None:
            decaying &= only
        elif self.rectifier and release_allowed:
            prev = self.l_init * (N - self.n_done) / N      # the norm we pinned one step ago
            live = self.status != PRUNED
            release = self.rectifier.releases(self.groups, decaying, live, norm, prev,
                                              self.l_init / N, step, self.entries)
            self.status = torch.where(release, RELEASED, self.status)  # no mask indexing: no sync
            decaying &= ~release
        if only is None:  # structures a host requested since the last step begin now
            new = self.pending & ((self.status == FREE) | (self.status == RELEASED))
            given = ~torch.isnan(self.pending_l_init)
            self._begin(new, torch.where(given, self.pending_l_init, norm))
            decaying |= new
            self.pending = torch.zeros_like(self.pending)
            self.pending_l_init = torch.full_like(self.pending_l_init, float("nan"))
        n_new = self.n_done + decaying
        target = self.l_init * (N - n_new).clamp_min(0) / N
        factor = torch.where(decaying, target / norm.clamp_min(1e-12), torch.ones_like(norm))
        finished = decaying & (n_new >= N)
        self.status = torch.where(finished, PRUNED, self.status)
        self.n_done = n_new
        pruned = self.status == PRUNED
        factor = torch.where(pruned, torch.zeros_like(factor), factor)
        keep = (~pruned).to(factor.dtype)
        self.groups.scale_(factor, keep, optimizer, rest_factor=keep, entries=self.entries)
        if self.trace:
            self.norm_trace.append(self.norms())

    # ---- inspection ----

    def decaying_ids(self) -> torch.Tensor:
        return (self.status == DECAYING).nonzero().flatten().cpu()

    def pruned_ids(self) -> torch.Tensor:
        return (self.status == PRUNED).nonzero().flatten().cpu()

    def released_ids(self) -> torch.Tensor:
        return (self.status == RELEASED).nonzero().flatten().cpu()

    @property
    def release_log(self) -> list[dict]:
        if not self.rectifier:
            return []
        self.rectifier.flush(self.groups)
        return self.rectifier.log

    def schedule(self) -> dict:
        """What a result record keeps of the decay: N, rounds and what each selected."""
        target = None if self.target is None else {type(self.target).__name__: vars(self.target)}
        return {"decay_steps": self.decay_steps, "criterion": self.criterion, "scope": self.scope,
                "rounds": self.round_log, "target": target,
                "rectifier": self.rectifier.config() if self.rectifier else None}

    def detach(self) -> None:
        """Forget the model's parameters (called once they are physically removed)."""
        self.groups.entries = []

    def state_dict(self) -> dict:
        s = {"status": self.status, "l_init": self.l_init, "n_done": self.n_done,
             "pending": self.pending, "pending_l_init": self.pending_l_init,
             "round_log": self.round_log}
        if self.rectifier:
            s["rectifier"] = self.rectifier.state_dict()
        if hasattr(self.selector, "state_dict"):
            s["selector"] = self.selector.state_dict()
        return s

    def load_state_dict(self, state: dict) -> None:
        self.status, self.l_init, self.n_done = state["status"], state["l_init"], state["n_done"]
        self.pending = state.get("pending", torch.zeros_like(self.status, dtype=torch.bool))
        self.pending_l_init = state.get("pending_l_init", torch.full_like(self.l_init, float("nan")))
        self.round_log = state["round_log"]
        if self.rectifier and "rectifier" in state:
            self.rectifier.load_state_dict(state["rectifier"])
        if hasattr(self.selector, "load_state_dict") and "selector" in state:
            self.selector.load_state_dict(state["selector"])
        self._follow_model_device()
