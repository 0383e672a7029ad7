"""The DepGraph host's recipe per profile: sparse learning, progressive pruning to a MACs
speed-up, fine-tuning (the profile's own, so that every method trains the same epochs)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from ...experiments.host import no_recipe
from ...experiments.profiles import Profile, get_profile
from ...training.config import TrainConfig


@dataclass(frozen=True)
class DepGraphRecipe:
    """Torch-Pruning ``group_sl``: ``sparse_learning`` (None = the "w/o SL" variant), then
    progressive pruning to ``speedup`` (dense/pruned MACs), then ``finetune``. With DPM, the
    rounds run every ``decay_steps`` over the first ``prune_phase`` of fine-tuning."""

    model: str
    speedup: float
    sparse_learning: TrainConfig | None
    finetune: TrainConfig
    decay_steps: int
    reg: float = 5e-4
    normalizer: str = "max"
    iterative_steps: int = 400
    prune_phase: float = 0.5

    def to_dict(self) -> dict:
        return asdict(self)


def _sl(epochs: int, **kw) -> TrainConfig:
    # Torch-Pruning turns the optimiser's weight decay off while the regulariser runs.
    return TrainConfig(epochs=epochs, lr=0.01, weight_decay=0.0, **kw)


def depgraph_recipe(profile: Profile | str | None = None, sparse_learning: bool = True,
                    model: str | None = None) -> DepGraphRecipe:
    """The DepGraph recipe of ``profile``; fine-tuning is the profile's own (so ``--epochs``
    applies to it)."""
    p = profile if isinstance(profile, Profile) else get_profile(profile)
    if p.name == "paper":
        # Torch-Pruning reproduce/: SL 100 epochs lr 0.01 steps 60/80, reg 5e-4; 2.11x; FT 100
        # epochs lr 0.01 steps 60/80 (its reproduce/ scripts). N = 5 epochs, as the core profile.
        sl = _sl(100, schedule="multistep", milestones=(60, 80))
        r = DepGraphRecipe(model="resnet56", speedup=2.11, sparse_learning=sl,
                           finetune=p.finetune, decay_steps=p.decay_steps)
    elif p.name == "mini":
        r = DepGraphRecipe(model="resnet20", speedup=2.0, sparse_learning=_sl(10, schedule="cosine"),
                           finetune=p.finetune, decay_steps=p.decay_steps)
    elif p.name == "full":
        # sparse learning as long as fine-tuning, as in the paper recipe (100 + 100 epochs), at
        # mini's cosine lr 0.01; it follows the profile's fine-tuning budget once that is chosen
        r = DepGraphRecipe(model="resnet20", speedup=2.0,
                           sparse_learning=_sl(p.finetune.epochs, schedule="cosine"),
                           finetune=p.finetune, decay_steps=p.decay_steps)
    elif p.name == "smoke":
        r = DepGraphRecipe(model=p.model, speedup=2.0, sparse_learning=_sl(1, schedule="constant"),
                           finetune=p.finetune, decay_steps=p.decay_steps)
    else:
        raise no_recipe("the DepGraph host", p, ("smoke", "mini", "full", "paper"))
    if not sparse_learning:
        r = replace(r, sparse_learning=None)
    return replace(r, model=model) if model else r
