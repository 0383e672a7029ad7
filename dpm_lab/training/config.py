"""One training phase's recipe (:class:`TrainConfig`): epochs, optimiser, schedule, loss.

Every value is validated on construction so a bad value fails at once with a message that names
it and what is allowed.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

SCHEDULES = ("multistep", "cosine", "onecycle", "constant", "triangular")
# The arithmetic a run trains in (``engine.fit``'s ``precision``): float32, or the forward pass
# and loss under bfloat16 autocast. A property of a whole run (its profile or ``--precision``),
# not of one phase's recipe, so it is not a TrainConfig field: every recipe keeps its identity.
PRECISIONS = ("fp32", "bf16")


def require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


@dataclass(frozen=True)
class TrainConfig:
    """One training phase (dense pre-training or fine-tuning). Milestones are in epochs."""

    epochs: int
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    label_smoothing: float = 0.0

    def __post_init__(self):
        require(isinstance(self.epochs, int) and self.epochs >= 1,
               f"epochs must be an integer >= 1, got {self.epochs!r}")
        require(self.lr > 0, f"lr must be > 0, got {self.lr!r}")
        require(0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum!r}")
        require(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay!r}")
        require(self.schedule in SCHEDULES,
               f"unknown schedule {self.schedule!r}; choose one of: {', '.join(SCHEDULES)}")
        require(0 <= self.label_smoothing < 1,
               f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        require(all(0 < m < self.epochs for m in self.milestones),
               f"milestones must lie in (0, epochs={self.epochs}), got {self.milestones!r}")

    def with_epochs(self, epochs: int) -> "TrainConfig":
        """The same recipe stretched to ``epochs``: milestones scale proportionally (rounded;
        ones that collapse onto each other or onto 0/``epochs`` are dropped, so a multistep
        schedule keeps its shape instead of silently becoming constant)."""
        require(isinstance(epochs, int) and epochs >= 1,
               f"epochs must be an integer >= 1, got {epochs!r}")
        scaled = sorted({round(m * epochs / self.epochs) for m in self.milestones})
        return replace(self, epochs=epochs, milestones=tuple(m for m in scaled if 0 < m < epochs))
