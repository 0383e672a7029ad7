"""Self-Rectifying (SR): release decaying structures that the gradients say were chosen wrongly.

Two signals per decaying structure i, computed from what the step already produced. The DPM
paper (Yang et al., arXiv:2406.03879) names the two signals, an escape rate and a gradient
length; its exact formulas were not available to us, so these are our reading:

- ``C_rate`` — the *escape rate*: how much the optimiser step tried to grow the structure,
  (‖x̃_i‖ − ‖x_i‖) / ref. ``rate_reference="decay_step"`` (default) divides by the decay step
  L_init/N, so C_rate = 1 means the optimiser undoes a whole decay step per iteration; this keeps
  the signal on one scale through the decay (dividing by ‖x_i‖, ``"norm"``, makes every structure
  look resistant near the end, when ‖x_i‖ → 0 and any gradient noise is large relative to it).
- ``C_len`` — the *gradient length*: ‖∇_i‖ divided by the mean ‖∇_j‖ over the live structures of
  the same dependency group (same layers, so same slice sizes).

Single-step gradients are noisy, so both are smoothed by a bias-corrected exponential moving
average over ``window`` steps, and nothing is released before ``window`` observations. Release
rule: ``"all"`` (C_rate > T_rate and C_len > T_len; the summaries' "two criteria" read as a joint
test) or ``"any"``. Defaults T_rate = 0.5 (the optimiser pushes back half a decay step per
iteration) and T_len = 1.0 (an above-average gradient in its layer) are choices, not the paper's.

A released structure stops decaying and keeps its current weights; the host's next selection
round picks replacements, so the pruning target is still met (see ``SmoothPruning``).
Releases are accumulated on the device and read back only at selection rounds (no per-step sync).
"""
from __future__ import annotations

import torch

RULES = ("all", "any")
RATE_REFERENCES = ("decay_step", "norm")


class SelfRectifying:
    def __init__(self, t_rate: float = 0.5, t_len: float = 1.0, rule: str = "all",
                 window: int = 10, rate_reference: str = "decay_step", record: bool = False):
        if rule not in RULES:
            raise ValueError(f"unknown release rule {rule!r}; choose one of: {', '.join(RULES)}")
        if rate_reference not in RATE_REFERENCES:
            raise ValueError(f"unknown rate_reference {rate_reference!r}; "
                             f"choose one of: {', '.join(RATE_REFERENCES)}")
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window!r}")
        self.t_rate, self.t_len, self.rule, self.window = t_rate, t_len, rule, window
        self.rate_reference, self.record = rate_reference, record
        self.log: list[dict] = []       # one dict per release, filled at flush()
        self.trace: list[torch.Tensor] = []  # per step [3, S]: (C_rate, C_len, decaying) when record

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

    def releases(self, groups, decaying, live, norm_now, norm_prev, step_len, step: int):
        """Bool ``[S]``: the decaying structures to release at this step."""
        grad = groups.squared_norms("grad").sqrt()
        c_len = grad / groups.group_mean(grad, live.float()).clamp_min(1e-12)
        ref = step_len if self.rate_reference == "decay_step" else norm_prev
        c_rate = (norm_now - norm_prev) / ref.clamp_min(1e-12)
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
        if self.record:
            self.trace.append(torch.stack([rate, length, decaying.float()]))
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

    def state_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("ema_rate", "ema_len", "count", "pending", "at_step",
                                              "at_rate", "at_len", "log")}

    def load_state_dict(self, state: dict) -> None:
        for k, v in state.items():
            setattr(self, k, v)
