"""The Gate Decorator host's recipe per profile: gated BN, Tick-Tock to a MACs target, finishing
ticks so that the last decays end, fine-tuning."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from ...experiments.host import no_recipe
from ...experiments.profiles import Profile, get_profile
from ...training.config import TrainConfig


@dataclass(frozen=True)
class GateDecoratorRecipe:
    """Gate Decorator (You et al., NeurIPS 2019; official configs in ``run/`` of
    github.com/youzhonghui/gate-decorator-pruning): BN folded into gates, then Tick-Tock until the
    MACs fall to ``target_macs`` of dense. A *tick* trains ``tick_batches`` steps with the conv
    weights frozen (``tick``: SGD at the low lr), accumulating the Taylor scores, then prunes
    ``prune_fraction`` of the remaining channels (each group keeps ``min_keep`` of its own). A
    *tock* after every ``tock_every`` ticks trains everything (``tock``, triangular lr) with L1
    ``l1`` on the gates. ``finish_ticks`` ticks without pruning follow the target, so that Smooth
    Pruning's last decays end (N = ``decay_steps`` ≤ ``finish_ticks · tick_batches``; the host
    trains them too, so every method trains the same steps). Then melt, remove, ``finetune``.
    ``decay``: what Smooth Pruning decays: ``"gate"`` (φ, the channel's scale) or
    ``"gate+filter"`` (φ with the conv filter and its bias)."""

    model: str
    target_macs: float
    prune_fraction: float
    tick_batches: int
    tick: TrainConfig
    tock: TrainConfig
    tock_every: int
    finetune: TrainConfig
    decay_steps: int
    finish_ticks: int
    l1: float = 1e-3
    min_keep: float = 0.1
    decay: str = "gate"

    def to_dict(self) -> dict:
        return asdict(self)


def gatedecorator_recipe(profile: Profile | str | None = None,
                         model: str | None = None) -> GateDecoratorRecipe:
    """The Gate Decorator recipe of ``profile``. ``paper``: the official VGG-16 config (≈ 10 %
    FLOPs, p = 0.5 %) or ResNet-56 (30 % FLOPs, p = 0.2 %): ticks at lr 1e-3 over one epoch,
    tocks of 10 epochs at 1e-3↔1e-2 every 10 ticks, λ = 1e-3, fine-tuning 40 epochs at
    1e-3↔1e-2 with momentum 0. ``mini``: ResNet-20 to 0.5× MACs (DepGraph's 2× target), ticks
    of 10 steps pruning 5 % of what remains, a one-epoch tock every 5 ticks, the profile's
    fine-tuning (the budget of every other method). N = two ticks (the paper does not say;
    our choice, a parameter)."""
    p = profile if isinstance(profile, Profile) else get_profile(profile)
    tick = TrainConfig(epochs=1, lr=1e-3, schedule="constant", weight_decay=5e-4)
    tock = TrainConfig(epochs=10, lr=1e-2, schedule="triangular", weight_decay=5e-4)
    if p.name == "paper":
        model = model or "vgg16_bn"
        target, fraction = {"vgg16_bn": (0.1, 0.005), "resnet56": (0.3, 0.002)}.get(
            model, (0.3, 0.002))
        steps = 390  # one epoch of CIFAR-10 at batch 128
        finetune = TrainConfig(epochs=40, lr=1e-2, momentum=0.0, schedule="triangular",
                               weight_decay=5e-4)
        return GateDecoratorRecipe(model=model, target_macs=target, prune_fraction=fraction,
                                   tick_batches=steps, tick=tick, tock=tock, tock_every=10,
                                   finetune=finetune, decay_steps=2 * steps, finish_ticks=2)
    if p.name == "mini":
        return GateDecoratorRecipe(model=model or "resnet20", target_macs=0.5,
                                   prune_fraction=0.05, tick_batches=10, tick=tick,
                                   tock=replace(tock, epochs=1), tock_every=5,
                                   finetune=p.finetune, decay_steps=20, finish_ticks=2)
    if p.name != "smoke":
        raise no_recipe("the Gate Decorator host", p, ("smoke", "mini", "paper"))
    return GateDecoratorRecipe(model=model or p.model, target_macs=0.7, prune_fraction=0.2,
                               tick_batches=2, tick=tick, tock=replace(tock, epochs=1),
                               tock_every=2, finetune=p.finetune, decay_steps=p.decay_steps,
                               finish_ticks=2)  # N = 4 fits 2 finishing ticks of 2 steps
