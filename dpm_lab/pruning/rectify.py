"""Self-Rectifying (SR): release decaying structures that the gradients say were chosen wrongly.

Two signals per decaying structure i, computed from what the step already produced. The DPM
paper (Yang et al., arXiv:2406.03879) names the two signals, an escape rate and a gradient
length; its exact formulas were not available to us, so these are our reading:

- ``C_rate`` — the *escape rate*: does the optimiser push the structure outward, against the
  decay? ``rate_reference`` picks how it is measured:

  - ``"gradient"`` (scale-free): the cosine between the negative loss gradient and the
    structure's weights, cos(−∇_i, x_i) in [−1, 1]; +1 means the loss pushes straight outward.
    It reads the slices that carry the channel's scale: the BN's γ and β when the structure has
    a BN (train-mode BN makes a filter's norm scale-invariant, so the loss gradient of a filter
    is orthogonal to it and says nothing about growth), else the producer slices. It does not
    depend on the learning rate, N, L_init or the layer's scale, so one T_rate means the same
    everywhere.
  - ``"decay_step"``: (‖x̃_i‖ − ‖x_i‖) / (L_init/N), the norm the optimiser step tried to add, in
    decay steps; proportional to lr·N/L_init, so a threshold does not carry over across N,
    learning rate or layer (the earlier default, kept as an option).
  - ``"norm"``: the same growth relative to the current norm, which makes every structure look
    resistant as its norm approaches zero.
- ``C_len`` — the *gradient length*: ‖∇_i‖ divided by the mean ‖∇_j‖ over the live structures of
  the same dependency group (same layers, so same slice sizes).

Single-step gradients are noisy, so both are smoothed by a bias-corrected exponential moving
average over ``window`` steps, and nothing is released before ``window`` observations. Release
rule: ``"all"`` (C_rate > T_rate and C_len > T_len; the summaries' "two criteria" read as a joint
test) or ``"any"``. The defaults (``rate_reference="gradient"``, T_rate = 0.5: the smoothed
gradient points more outward than sideways; T_len = 1.0: an above-average gradient in its layer;
window 10) are ours, not the paper's, chosen on a validation split (``runspec.SR_DEFAULTS``,
notebook 03): with them SR releases about one decaying structure in ten, and under
deliberately wrong selection those it releases rank above the pruned ones in the dense L2 order.

A released structure stops decaying and keeps its current weights; the host's next selection
round picks replacements, so the pruning target is still met (see ``SmoothPruning``).
Releases are accumulated on the device and read back only at selection rounds (no per-step sync).
"""
from __future__ import annotations

import torch

RULES = ("all", "any")
RATE_REFERENCES = ("gradient", "decay_step", "norm")
# The settings a run's configuration gives Self-Rectifying (its arguments that shape releases;
# ``runspec.SR_DEFAULTS`` holds a default for each, a profile's ``self_rectifying`` overrides some)
OPTIONS = ("t_rate", "t_len", "rule", "window", "rate_reference")


def radial_cosine(groups, entries=None) -> torch.Tensor:
    """``[S]``: cos(−∇_i, x_i) over each structure's scale slices: its BN's γ and β when it has a
    BN, else its slices among ``entries`` (default: all). Zero where either vector is zero.

    Frozen parameters (``requires_grad=False``) are left out: the optimiser cannot move them, so
    they carry no escape signal, and counted in ‖x_i‖ they would only shrink the cosine. Gate
    Decorator's gated BN is the case: its γ is frozen at 1 and the trainable gate φ carries the
    scale, so the cosine reads β and φ (with γ in it, the cosine stays under ‖(β, φ)‖ / ‖(1, β, φ)‖,
    a bound that falls as φ decays: measured, no gate was ever released)."""
    def stats(subset):
        subset = [e for e in (groups.entries if subset is None else subset)
                  if e.param.requires_grad]
        inner = groups.reduce(lambda p: None if p.grad is None else -(p.grad * p), subset)
        gg = groups.squared_norms("grad", subset)
        xx = groups.squared_norms(None, subset)
        return inner / (gg * xx).sqrt().clamp_min(1e-30)

    bn = groups.bn_entries()
    if not bn:
        return stats(entries)
    return torch.where(groups.has_bn, stats(bn), stats(entries))


def check_release_window(decay_steps: int, window: int) -> None:
    """Raise ``ValueError`` naming N and the window where Self-Rectifying could never release.

    Why: a structure selected with N = ``decay_steps`` gets its first decay application at
    selection and is observed (:meth:`SelfRectifying.releases`) after each of the next N − 1
    optimiser steps, the last of them the step that zeroes it; a release needs ``window``
    observations. With window ≥ N, DPM would silently be SP. N = 1 is allowed: nothing decays
    across a step (the selection is zeroed at once, single-step pruning at each round), so there
    is nothing for Self-Rectifying to observe, by definition rather than by a window too long."""
    if decay_steps > 1 and window >= decay_steps:
        raise ValueError(
            f"Self-Rectifying could never release anything: with N = {decay_steps} decay steps a "
            f"structure is observed at most N - 1 = {decay_steps - 1} times before it reaches "
            f"zero, fewer than the window = {window} observations a release needs. Give a window "
            f"< N (or N > {window})")


class SelfRectifying:
    def __init__(self, t_rate: float = 0.5, t_len: float = 1.0, rule: str = "all",
                 window: int = 10, rate_reference: str = "gradient", record: bool = False,
                 record_every: int = 1):
        if rule not in RULES:
            raise ValueError(f"unknown release rule {rule!r}; choose one of: {', '.join(RULES)}")
        if rate_reference not in RATE_REFERENCES:
            raise ValueError(f"unknown rate_reference {rate_reference!r}; "
                             f"choose one of: {', '.join(RATE_REFERENCES)}")
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window!r}")
        self.t_rate, self.t_len, self.rule, self.window = t_rate, t_len, rule, window
        self.rate_reference, self.record, self.record_every = rate_reference, record, record_every
        self.log: list[dict] = []       # one dict per release, filled at flush()
        # with record, per step [5, S]: smoothed C_rate, C_len (decaying structures), decaying,
        # and the raw C_rate, C_len of every structure (for diagnosis against non-selected ones)
        self.trace: list[torch.Tensor] = []

    def config(self) -> dict:
        return {"t_rate": self.t_rate, "t_len": self.t_len, "rule": self.rule,
                "window": self.window, "rate_reference": self.rate_reference}

    def reset(self, num_structures: int, device, dtype=torch.float32) -> None:
        """Fresh per-structure state; ``dtype`` is the groups' accumulation dtype."""
        z = lambda d=dtype: torch.zeros(num_structures, device=device, dtype=d)  # noqa: E731
        self.ema_rate, self.ema_len, self.count = z(), z(), z(torch.int64)
        self.pending = z(torch.bool)
        self.at_step, self.at_rate, self.at_len = z(torch.int64), z(), z()

    def to(self, device) -> None:
        for k in ("ema_rate", "ema_len", "count", "pending", "at_step", "at_rate", "at_len"):
            setattr(self, k, getattr(self, k).to(device))

    def on_select(self, mask: torch.Tensor) -> None:
        """Structures in bool ``mask [S]`` start decaying: their averages start afresh."""
        self.ema_rate = torch.where(mask, 0.0, self.ema_rate)
        self.ema_len = torch.where(mask, 0.0, self.ema_len)
        self.count = torch.where(mask, 0, self.count)

    def signals(self, groups, norm_now, norm_prev, step_len, live, entries=None):
        """This step's raw ``(C_rate, C_len)`` of every structure, each ``[S]``. ``entries``: the
        slices that decay (C_len and the non-BN C_rate read those)."""
        grad = groups.squared_norms("grad", entries).sqrt()
        c_len = grad / groups.group_mean(grad, live.to(grad.dtype)).clamp_min(1e-12)
        if self.rate_reference == "gradient":
            return radial_cosine(groups, entries), c_len
        ref = step_len if self.rate_reference == "decay_step" else norm_prev
        return (norm_now - norm_prev) / ref.clamp_min(1e-12), c_len

    def releases(self, groups, decaying, live, norm_now, norm_prev, step_len, step: int,
                 entries=None):
        """Bool ``[S]``: the decaying structures to release at this step."""
        c_rate, c_len = self.signals(groups, norm_now, norm_prev, step_len, live, entries)
        beta = 1.0 - 1.0 / self.window
        d = decaying.to(c_rate.dtype)
        self.ema_rate = torch.lerp(self.ema_rate, c_rate, (1 - beta) * d)
        self.ema_len = torch.lerp(self.ema_len, c_len, (1 - beta) * d)
        self.count += decaying
        debias = 1 - beta ** self.count.clamp_min(1).float()
        rate, length = self.ema_rate / debias, self.ema_len / debias
        over_rate, over_len = rate > self.t_rate, length > self.t_len
        hit = over_rate & over_len if self.rule == "all" else over_rate | over_len
        release = hit & decaying & (self.count >= self.window)
        self.pending |= release
        self.at_step = torch.where(release, step, self.at_step)
        self.at_rate = torch.where(release, rate, self.at_rate)
        self.at_len = torch.where(release, length, self.at_len)
        if self.record and step % self.record_every == 0:
            # smoothed (decaying only), the mask, and the raw signals of all structures
            self.trace.append(torch.stack([rate, length, decaying.to(rate.dtype), c_rate, c_len]))
        return release

    def flush(self, groups) -> list[dict]:
        """Move releases since the last flush into ``self.log`` (one host sync) and return them."""
        ids = self.pending.nonzero().flatten().tolist()
        new = []
        for s in ids:
            g = int(groups.group_of[s])
            new.append({"step": int(self.at_step[s]), "structure": s, "group": groups.groups[g].root,
                        "channel": s - groups.groups[g].offset, "c_rate": float(self.at_rate[s]),
                        "c_len": float(self.at_len[s])})
        self.pending.zero_()
        self.log += sorted(new, key=lambda r: r["step"])
        return new

    def signal_summary(self, status: torch.Tensor, quantiles=(0.1, 0.5, 0.9)) -> dict:
        """Quantiles of the raw C_rate and C_len (needs ``record=True``) over every checked step:
        of structures while decaying, and of structures never selected (``status`` FREE at the
        end), the reference a release threshold has to separate them from."""
        if not self.trace:
            return {}
        t = torch.stack(self.trace).float().cpu()                      # [steps, 5, S]
        decaying = t[:, 2] > 0
        never = (status.cpu() == 0).expand_as(decaying)
        q = torch.tensor(quantiles)
        out = {"quantiles": list(quantiles)}
        for name, mask in (("decaying", decaying), ("never_selected", never)):
            out[name] = {"n": int(mask.sum())}
            for i, signal in ((3, "c_rate"), (4, "c_len")):
                v = t[:, i][mask]
                out[name][signal] = torch.quantile(v, q).tolist() if len(v) else None
        return out

    def state_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("ema_rate", "ema_len", "count", "pending", "at_step",
                                              "at_rate", "at_len", "log")}

    def load_state_dict(self, state: dict) -> None:
        for k, v in state.items():
            setattr(self, k, v)
