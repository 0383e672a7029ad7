"""TPP's recipe per profile: the layers it prunes, its regularisation (ramp, then stabilise) and
fine-tuning, together the fine-tuning budget of every other method."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from ...experiments.host import no_recipe
from ...experiments.profiles import Profile, get_profile
from ...training.config import TrainConfig


@dataclass(frozen=True)
class TPPRecipe:
    """TPP (Wang & Fu, ICLR 2023; github.com/MingSun-Tse/TPP): the ``layer_ratio`` smallest-L1
    filters of every layer whose name matches ``layers`` (and no ``exclude`` pattern) are chosen
    once; ``regularise`` trains with the penalty for ``ramp_epochs`` (r grows to ``r_max``) plus
    ``stabilize_epochs`` (held, with layer-by-layer zeroing every ``zero_interval`` steps); then
    removal and ``finetune``. ``update_interval``: K_u. ``decay_steps``: N of TPP × DPM, which
    replaces the zeroing."""

    layers: tuple[str, ...]
    exclude: tuple[str, ...]
    layer_ratio: float
    regularise: TrainConfig
    ramp_epochs: int
    stabilize_epochs: int
    finetune: TrainConfig
    decay_steps: int
    update_interval: int = 10
    r_max: float = 1.0
    gram_weight: float = 1000.0
    zero_interval: int = 100

    def to_dict(self) -> dict:
        return asdict(self)


def tpp_layers(model: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """TPP's layer choice: ResNets prune the first conv of every residual block (the paper's
    ``*layer*.conv1``), VGGs every conv but the first; other models every group (our choice)."""
    if model.startswith("resnet"):
        return ("layer*.conv1",), ()
    if model.startswith("vgg"):
        return ("features.*",), ("features.0",)
    return ("*",), ()


def tpp_recipe(profile: Profile | str | None = None, model: str | None = None,
               layer_ratio: float | None = None) -> TPPRecipe:
    """The TPP recipe of ``profile``. ``paper``: the official code's CIFAR setting (Δ = 1e-4 every
    K_u = 10 steps: 100k ramp steps ≈ 256 epochs at batch 128, 10k stabilise steps ≈ 26 epochs,
    lr 1e-3) and its fine-tuning (120 epochs, lr 0.01, ÷10 at 60 and 90). ``mini``: the same
    shape compressed so that regularisation (5 epochs) and fine-tuning (10) together take the
    profile's 15 fine-tuning epochs, the budget of every other method (our choice)."""
    p = profile if isinstance(profile, Profile) else get_profile(profile)
    model = model or p.model
    layers, exclude = tpp_layers(model)
    reg = TrainConfig(epochs=1, lr=1e-3, schedule="constant", weight_decay=5e-4)
    if p.name == "paper":
        ramp, stab, extra = 256, 26, {}
        finetune = TrainConfig(epochs=120, lr=0.01, schedule="multistep", milestones=(60, 90),
                               weight_decay=5e-4)
    elif p.name == "mini":
        ramp, stab, extra = 3, 2, dict(zero_interval=10)
        finetune = p.finetune.with_epochs(p.finetune.epochs - ramp - stab)
    elif p.name == "smoke":  # one epoch each, every step a ramp update
        ramp, stab, extra = 1, 1, dict(update_interval=1, zero_interval=1)
        finetune = p.finetune
    else:
        raise no_recipe("TPP (--method tpp, tpp+dpm, or --layer-ratio)", p,
                        ("smoke", "mini", "paper"))
    return TPPRecipe(layers=layers, exclude=exclude,
                     layer_ratio=0.5 if layer_ratio is None else layer_ratio,
                     regularise=replace(reg, epochs=ramp + stab), ramp_epochs=ramp,
                     stabilize_epochs=stab, finetune=finetune, decay_steps=p.decay_steps, **extra)
