"""OTOv2's DHSPG optimiser (Dual Half-Space Projected Gradient), written from the algorithm.

OTOv2 prunes *during* training: it partitions the network's zero-invariant groups (ZIGs: a
channel's producer slices, i.e. :class:`ChannelGroups` with ``consumers=False``) into a redundant
set G_p and the rest, pushes G_p towards zero with an adaptive group-lasso term, and projects a
group onto exactly zero in one step once the trial point crosses the half-space
⟨x̂_g, x_g⟩ < ε‖x_g‖². Zero groups stay zero, so at the end they are removed with identical
outputs and no fine-tuning (Chen et al., "OTOv2: Automatic, Generic, User-Friendly", ICLR 2023,
Algorithm 2 and its released code give the update this module implements).

Why our own: the ``only_train_once`` package cannot serve here (2.0.x hard-codes CUDA and
compresses through ONNX; 3.x ships no DHSPG). Every per-group quantity below is one
``index_add_`` per parameter over :class:`ChannelGroups`' owner maps: no loop over groups, and no
host sync per step (the random subset of a capped projection is drawn on the device).

DPM plugs into the one hard step: with ``decay`` set (a :class:`SmoothPruning` over the same
groups), a group that satisfies the projection condition is handed to Smooth Pruning via
``decay.request`` instead of being zeroed, and decays over N steps while DHSPG keeps giving its
direction. With N = 1 this is exactly DHSPG's projection (tested). Everything else is DHSPG as
OTOv2 defines it, unless one of the named deviations below is switched on (each is a parameter,
so its effect can be measured on and off):

- ``lasso_while_decaying`` (OTOv2: ``True``): a G_p group on its way to zero keeps the
  group-lasso term until the target is reached. ``False`` drops it once the group is committed.
- ``l_init_at`` (OTOv2 + DPM's own statement: ``"projection"``): the schedule starts from
  ‖x_g‖ at the projection test, so the first decay step leaves (N − 1)/N of it. ``"trial"``
  starts from the norm of the (lasso-shrunk) trial point instead.
- ``released`` (OTOv2: ``"stay"``): a group Self-Rectifying releases stays in G_p and may be
  projected again. ``"leave"`` takes it out of G_p; ``"replace"`` also brings in the
  best-scoring free group outside G_p, so G_p keeps its size.

What Self-Rectifying reads (``sr_signal``): ``"gradient"`` (default), the raw loss gradient, as in
every other host; ``"update"``, DHSPG's step direction u, x̂ = x − lr·u (the base direction d with
momentum and weight decay, plus the group-lasso pull λ_g·x_g/‖x_g‖): DHSPG's own variant of the
gradient, our reading of what SR would take from this host (the DPM authors published no code). The
raw gradient stays the default because DHSPG's adaptive λ_g is built to overpower exactly the
outward push SR looks for: where ⟨x_g, d_g⟩ < 0 it sets λ_g above −⟨x_g, d_g⟩/‖x_g‖ unless its cap
λ·hat_λ_coeff binds, so ⟨x_g, u_g⟩ > 0: the step of a group under the lasso (a decaying G_p group,
until the target is reached) points inward, and its C_rate is pulled down whatever the loss says.
The gradient asks whether the loss resists the decay, the update whether DHSPG's step does; the
option lets both be measured. With ``"update"``, u is left in every parameter's ``.grad`` after the
step, where Self-Rectifying reads it (the next step's ``zero_grad`` discards it).

Choices where the sources are silent (all parameters):
- base direction: SGD with momentum and L2 weight decay (the tutorials' recipe); DHSPG's own
  default is momentum 0 and no weight decay;
- "target reached" counts groups that are zero *or committed to decay*; once reached, G_p keeps
  only the plain λ penalty and nothing more is projected, as in DHSPG;
- a capped projection picks its random subset with a seeded device generator;
- the redundancy score's magnitude term is normalised over the non-zero groups only (a zero group
  would otherwise dominate the normalisation and erase the term for every other group).
"""
from __future__ import annotations

import math

import torch

from ...pruning.decay import PRUNED, RELEASED, SmoothPruning
from ...pruning.groups import ChannelGroups
from ...training.engine import Hook, TrainState

L_INIT_AT = ("projection", "trial")
RELEASED_GROUPS = ("stay", "leave", "replace")
SR_SIGNALS = ("gradient", "update")


class DHSPG(torch.optim.Optimizer):
    """DHSPG over ``groups`` (ZIGs). Parameters not in any group get the plain base step.

    ``target_sparsity``: fraction of groups to bring to zero. ``tolerance``: extra fraction kept
    in G_p. ``lmbda`` (λ), ``lmbda_amplify``, ``hat_lmbda_coeff``: the adaptive penalty.
    ``epsilon`` (ε): half-space threshold. ``start_step``: the partition and the penalty begin
    here (before it, plain SGD); ``project_step``: projections begin here (default = start).
    ``decay``: a :class:`SmoothPruning` that takes over the projection (DPM);
    ``lasso_while_decaying``, ``l_init_at``, ``released``, ``sr_signal``: see the module
    docstring.
    """

    def __init__(self, params, groups: ChannelGroups, lr: float = 0.1, momentum: float = 0.9,
                 weight_decay: float = 5e-4, nesterov: bool = False,
                 target_sparsity: float = 0.5, tolerance: float = 0.05, lmbda: float = 1e-3,
                 lmbda_amplify: float = 2.0, hat_lmbda_coeff: float = 10.0, epsilon: float = 0.0,
                 start_step: int = 0, project_step: int | None = None,
                 project_until: int | None = None, seed: int = 0,
                 decay: SmoothPruning | None = None, lasso_while_decaying: bool = True,
                 l_init_at: str = "projection", released: str = "stay",
                 sr_signal: str = "gradient"):
        if not 0 < target_sparsity < 1:
            raise ValueError(f"target_sparsity must be in (0, 1), got {target_sparsity!r}")
        if not 0 <= tolerance < 1:
            raise ValueError(f"tolerance must be in [0, 1), got {tolerance!r}")
        if not 0 <= epsilon < 1:
            raise ValueError(f"epsilon must be in [0, 1), got {epsilon!r}")
        if lmbda <= 0:
            raise ValueError(f"lmbda must be > 0, got {lmbda!r}")
        if groups.consumers:
            raise ValueError("DHSPG needs zero-invariant groups: ChannelGroups(..., consumers=False)")
        if decay is not None and decay.groups is not groups:
            raise ValueError("decay must be a SmoothPruning over the same ChannelGroups")
        if l_init_at not in L_INIT_AT:
            raise ValueError(f"unknown l_init_at {l_init_at!r}; choose one of: {', '.join(L_INIT_AT)}")
        if released not in RELEASED_GROUPS:
            raise ValueError(f"unknown released {released!r}; choose one of: "
                             f"{', '.join(RELEASED_GROUPS)}")
        if sr_signal not in SR_SIGNALS:
            raise ValueError(f"unknown sr_signal {sr_signal!r}; choose one of: "
                             f"{', '.join(SR_SIGNALS)}")
        self.lasso_while_decaying, self.l_init_at, self.released, self.sr_signal = (
            lasso_while_decaying, l_init_at, released, sr_signal)
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                                      nesterov=nesterov))
        self.groups, self.decay = groups, decay
        self.target_sparsity, self.tolerance, self.lmbda = target_sparsity, tolerance, lmbda
        self.lmbda_amplify, self.hat_lmbda_coeff, self.epsilon = lmbda_amplify, hat_lmbda_coeff, epsilon
        self.start_step = start_step
        self.project_step = start_step if project_step is None else project_step
        self.project_until = project_until
        S = groups.num_structures
        self.num_target = math.floor(target_sparsity * S)
        device = groups.entries[0].param.device   # the model's, wherever it was moved
        groups.to(device)
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.step_count = 0
        self.redundant = torch.zeros(S, dtype=torch.bool, device=device)   # G_p
        self.zero = torch.zeros(S, dtype=torch.bool, device=device)        # projected (native)
        self.partitioned = False
        self.sizes = groups.reduce(lambda p: torch.ones_like(p))           # |g|

    @classmethod
    def factory(cls, groups: ChannelGroups, **options):
        """An ``optimizer_factory`` for :func:`dpm_lab.training.engine.fit`: DHSPG over ``groups``
        with the training config's lr, momentum, weight decay and Nesterov flag, plus ``options``
        (target_sparsity, lmbda, epsilon, decay, ...). Built when ``fit`` has placed the model,
        so the group index maps follow it to its device."""
        def make(model, cfg):
            return cls(model.parameters(), groups, lr=cfg.lr, momentum=cfg.momentum,
                       weight_decay=cfg.weight_decay, nesterov=cfg.nesterov, **options)
        return make

    # ---- the update ----

    def _direction(self) -> dict:
        """The base optimiser's direction d for every parameter (SGD + momentum + L2 decay)."""
        d = {}
        for pg in self.param_groups:
            mu, wd = pg["momentum"], pg["weight_decay"]
            for p in pg["params"]:
                if p.grad is None:
                    continue
                g = p.grad.add(p, alpha=wd) if wd else p.grad.clone()
                if mu:
                    st = self.state[p]
                    buf = st.get("momentum_buffer")
                    if buf is None:
                        buf = st["momentum_buffer"] = g.clone()
                    else:
                        buf.mul_(mu).add_(g)
                    g = g.add(buf, alpha=mu) if pg["nesterov"] else buf
                d[p] = g
        return d

    def zero_groups(self) -> torch.Tensor:
        """Bool ``[S]``: groups at zero or on their way there (with DPM: decaying, pruned, requested)."""
        return self.zero if self.decay is None else self.decay.committed()

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        d = self._direction()
        lr = self.param_groups[0]["lr"]
        G = self.groups
        if self.step_count < self.start_step:
            for p, dp in d.items():
                p.sub_(dp, alpha=lr)
            if self.sr_signal == "update":
                self._expose_update(d)
            self.step_count += 1
            return loss

        dmap = lambda p: d.get(p, torch.zeros_like(p))  # noqa: E731
        xx = G.squared_norms()
        xd = G.reduce(lambda p: p * dmap(p))
        dd = G.reduce(lambda p: dmap(p).pow(2))
        if not self.partitioned:
            self._partition(xx, xd, dd)
        committed = self.zero_groups()
        reached = committed.sum() >= self.num_target                       # device bool, no sync
        if self.decay is not None and self.released != "stay":
            self._drop_released(xx, xd, dd, committed)
        # the groups that receive the group-lasso term (committed ones too, as in OTOv2)
        exempt = committed if not self.lasso_while_decaying else self._exactly_zero()
        active = self.redundant & ~exempt & (xx > 0)
        lam = self._lambda(xx, xd, dd)
        lam = torch.where(reached, torch.full_like(lam, self.lmbda), lam)
        xnorm = xx.sqrt().clamp_min(1e-12)
        coef = torch.where(active, lr * lam / xnorm, torch.zeros_like(lam))  # lasso: x·(1 − coef)

        # trial point x̂ = x − lr·d − lr·λ_g·x_g/‖x_g‖, written in place (x kept for the projection)
        old = {e.param: e.param.detach().clone() for e in G.entries}
        for p, dp in d.items():
            p.sub_(dp, alpha=lr)
        coef = G.pad(coef, fill=0.0)
        for e in G.entries:
            e.param.sub_(old[e.param] * G.expand(coef, e))
        if self.sr_signal == "update":
            self._expose_update(d, old, torch.where(active, lam / xnorm, torch.zeros_like(lam)))
        self.step_count += 1
        if self.step_count <= self.project_step or (
                self.project_until is not None and self.step_count > self.project_until):
            self._keep_zero()
            return loss

        # half-space projection: ⟨x̂_g, x_g⟩ < ε‖x_g‖² → zero (or, with DPM, start decaying)
        inner = G.reduce(lambda p: p * old[p] if p in old else None)
        cand = active & ~committed & (inner < self.epsilon * xx) & ~reached
        room = (self.num_target - committed.sum()).clamp_min(0)
        rank = torch.empty_like(xx, dtype=torch.long)
        order = torch.argsort(torch.where(cand, torch.rand(xx.shape, generator=self.generator,
                                                           device=xx.device), 2.0))
        rank[order] = torch.arange(len(order), device=xx.device)
        project = cand & (rank < room)                                    # capped at the target
        if self.decay is None:
            self.zero |= project
        else:
            self.decay.request(project, xx.sqrt() if self.l_init_at == "projection" else None,
                               allow_released=self.released == "stay")
        self._keep_zero()
        return loss

    def _expose_update(self, d: dict, old: dict | None = None, pull=None) -> None:
        """``sr_signal="update"``: replace every parameter's ``.grad`` by DHSPG's step direction
        u = d + λ_g·x_g/‖x_g‖ (``pull[S]`` = λ_g/‖x_g‖ where the lasso acts, else 0; ``old``: x
        before the step), so that x̂ = x − lr·u and Self-Rectifying, which reads ``.grad`` after
        the step, reads u."""
        for p, dp in d.items():
            p.grad.copy_(dp)
        if pull is None:
            return
        pull = self.groups.pad(pull, fill=0.0)
        for e in self.groups.entries:
            if e.param.grad is not None:
                e.param.grad.add_(old[e.param] * self.groups.expand(pull, e))

    def _score(self, xx, xd, dd) -> torch.Tensor:
        """DHSPG's redundancy score: aligned with −d and small on average = redundant. The
        magnitude term is normalised over the non-zero groups (zero groups score 0 there)."""
        xnorm, dnorm = xx.sqrt(), dd.sqrt()
        cos = xd / (xnorm * dnorm).clamp_min(1e-12)          # cos(−x, −d) = cos(x, d)
        inv_avg = torch.where(xx > 0, self.sizes / xnorm.clamp_min(1e-30), 0.0)  # |g| / ‖x_g‖
        return 0.5 * cos / cos.norm().clamp_min(1e-12) + 0.5 * inv_avg / inv_avg.norm().clamp_min(1e-12)

    def _partition(self, xx, xd, dd) -> None:
        """G_p: the top (target + tolerance) fraction of groups by :meth:`_score`."""
        S = len(xx)
        self.num_redundant = math.floor(S * min(self.target_sparsity + self.tolerance, 0.999))
        self.redundant = torch.zeros(S, dtype=torch.bool, device=xx.device)
        self.redundant[torch.topk(self._score(xx, xd, dd), self.num_redundant).indices] = True
        self.partitioned = True

    def _drop_released(self, xx, xd, dd, committed) -> None:
        """``released="leave"``: a group Self-Rectifying released leaves G_p (the gradients say
        it is needed). ``"replace"``: the best-scoring free group outside G_p also takes its
        place, so G_p keeps its size and the projection can still reach the target. Ranks on
        the device: no host sync."""
        released = self.decay.status == RELEASED
        self.redundant &= ~released
        if self.released == "leave":
            return
        deficit = self.num_redundant - self.redundant.sum()
        cand = ~self.redundant & ~released & ~committed & (xx > 0)
        score = torch.where(cand, self._score(xx, xd, dd), -torch.inf)
        rank = torch.empty_like(xx, dtype=torch.long)
        order = torch.argsort(score, descending=True)
        rank[order] = torch.arange(len(order), device=xx.device)
        self.redundant |= cand & (rank < deficit)

    def _exactly_zero(self) -> torch.Tensor:
        """Bool ``[S]``: groups already at zero (projected, or pruned by the decay)."""
        return self.zero if self.decay is None else self.decay.status == PRUNED

    def _lambda(self, xx, xd, dd) -> torch.Tensor:
        """Adaptive λ_g: raised where the loss pushes ‖x_g‖ up (⟨x_g, d_g⟩ < 0)."""
        xnorm = xx.sqrt().clamp_min(1e-12)
        lam_lb = -xd / xnorm
        lam = (self.lmbda_amplify * lam_lb).clamp(self.lmbda, self.lmbda * self.hat_lmbda_coeff)
        lam_ub = -dd * xnorm / torch.where(xd < 0, xd, -torch.ones_like(xd))
        lam = torch.where(lam >= lam_ub, (lam_lb + lam_ub) / 2, lam)
        return torch.where(xd < 0, lam, torch.full_like(lam, self.lmbda))

    def _keep_zero(self) -> None:
        """Zero groups stay zero: parameters and momentum buffers (native projection only; with
        DPM, Smooth Pruning re-zeroes what it pruned after every step)."""
        if self.decay is None:
            keep = (~self.zero).float()
            self.groups.scale_(keep, keep, self)

    # ---- checkpointing: the per-group state besides the per-parameter buffers ----

    def state_dict(self):
        s = super().state_dict()
        s["dhspg"] = {"step_count": self.step_count, "redundant": self.redundant,
                      "zero": self.zero, "partitioned": self.partitioned,
                      "num_redundant": getattr(self, "num_redundant", 0),
                      "generator": self.generator.get_state()}
        return s

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        extra = state_dict.pop("dhspg")
        super().load_state_dict(state_dict)
        device = self.redundant.device
        self.step_count, self.partitioned = extra["step_count"], extra["partitioned"]
        self.num_redundant = extra["num_redundant"]
        self.redundant, self.zero = extra["redundant"].to(device), extra["zero"].to(device)
        self.generator.set_state(extra["generator"])


def pruned_groups(optimizer: DHSPG) -> torch.Tensor:
    """Ids of the groups the run drove to zero (native projection, or pruned by the decay)."""
    if optimizer.decay is None:
        return optimizer.zero.nonzero().flatten().cpu()
    return (optimizer.decay.status == PRUNED).nonzero().flatten().cpu()


class SparsityLog(Hook):
    """Adds to every epoch's history entry the fraction of groups that are exactly zero
    (``group_sparsity``) and, with DPM, the fraction committed to zero (``committed``)."""

    def __init__(self, groups: ChannelGroups, decay: SmoothPruning | None = None):
        self.groups, self.decay = groups, decay

    def on_epoch_end(self, state: TrainState) -> None:
        entry = state.history[-1]
        entry["group_sparsity"] = (self.groups.squared_norms() == 0).float().mean().item()
        if self.decay is not None:
            entry["committed"] = self.decay.committed().float().mean().item()
