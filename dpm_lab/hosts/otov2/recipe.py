"""The OTOv2 host's recipe per profile: one DHSPG run that prunes as it trains (paper: OTOv2's
legacy tutorial recipe of each of the paper's rows)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from ...experiments.host import no_recipe
from ...experiments.profiles import Profile, get_profile
from ...training.config import TrainConfig


@dataclass(frozen=True)
class OTOv2Recipe:
    """OTOv2: one DHSPG run of ``train`` epochs that prunes to ``target_sparsity`` (fraction of
    zero-invariant groups). ``from_dense``: start from the profile's dense checkpoint (True, mini),
    from torchvision's pretrained ImageNet weights (``"torchvision"``, the ImageNet row) or from
    scratch (False, the paper's CIFAR rows). ``start_epoch``: partition and penalty begin."""

    model: str
    train: TrainConfig
    target_sparsity: float
    decay_steps: int
    start_epoch: int
    lmbda: float = 1e-3
    lmbda_amplify: float = 2.0
    hat_lmbda_coeff: float = 10.0
    tolerance: float = 0.05
    epsilon: float = 0.0
    from_dense: bool | str = False
    batch_size: int | None = None
    # DPM inside DHSPG: OTOv2's behaviour by default; each deviation is named (algorithm.py)
    lasso_while_decaying: bool = True
    l_init_at: str = "projection"
    released: str = "stay"

    def to_dict(self) -> dict:
        return asdict(self)


# The DPM paper's OTOv2 rows: OTOv2's legacy tutorial recipes (github.com/tianyic/only_train_once,
# branch otov2_legacy_backup, tutorials 01-04; DPM says it kept each host's recipe). N = 5 epochs
# of steps (the paper does not state N; our choice): 782 steps per epoch for CIFAR-10 at batch
# 64, 10009 for ImageNet-1k (1 281 167 images) at batch 128.
_PAPER_OTOV2 = {
    "vgg16_bn": dict(train=TrainConfig(epochs=300, lr=0.1, schedule="multistep",
                                       milestones=(75, 150, 225), weight_decay=5e-4),
                     target_sparsity=0.79, tolerance=0.21, lmbda=5e-4, epsilon=0.9,
                     start_epoch=50, batch_size=64, decay_steps=5 * 782),
    "resnet50_cifar": dict(train=TrainConfig(epochs=300, lr=0.1, schedule="multistep",
                                             milestones=(75, 150, 225), weight_decay=1e-3),
                           target_sparsity=0.9, epsilon=0.95, start_epoch=10, batch_size=64,
                           decay_steps=5 * 782),
    # ResNet-50 / ImageNet: from torchvision's pretrained weights, SGD lr 0.1, wd 0, batch 128,
    # StepLR every 30 epochs, label smoothing 0.1, pruning from epoch 15, eps 0.95, DPM's 70 %
    # group sparsity. The tutorial's "120 epochs x 2 passes" is read as 120 epochs, and its mixup
    # 0.2 is not implemented here: two documented departures.
    "resnet50": dict(train=TrainConfig(epochs=120, lr=0.1, schedule="multistep",
                                       milestones=(30, 60, 90), weight_decay=0.0,
                                       label_smoothing=0.1),
                     target_sparsity=0.7, epsilon=0.95, start_epoch=15, batch_size=128,
                     decay_steps=5 * 10009, from_dense="torchvision"),
}


def otov2_recipe(profile: Profile | str | None = None, model: str | None = None,
                 target_sparsity: float | None = None) -> OTOv2Recipe:
    """The OTOv2 recipe of ``profile`` (paper: one per model of the paper's rows)."""
    p = profile if isinstance(profile, Profile) else get_profile(profile)
    if p.name == "paper":
        model = model or "vgg16_bn"
        if model not in _PAPER_OTOV2:
            raise ValueError(f"no paper OTOv2 recipe for {model!r}; "
                             f"choose one of: {', '.join(_PAPER_OTOV2)}")
        r = OTOv2Recipe(model=model, **_PAPER_OTOV2[model])
    elif p.name == "mini":
        # ResNet-20 from the dense checkpoint, 20 epochs. λ is 300x OTOv2's default so that the
        # target is reached within 20 epochs instead of hundreds (a choice; see notebook 05).
        r = OTOv2Recipe(model=model or "resnet20", target_sparsity=0.5, decay_steps=p.decay_steps,
                        start_epoch=1, lmbda=0.3, epsilon=0.9, from_dense=True,
                        train=TrainConfig(epochs=20, lr=0.05, schedule="cosine", weight_decay=5e-4))
    elif p.name == "smoke":  # λ so large that groups are projected within its 16 steps (code
        # paths only); 4 epochs, so that Self-Rectifying may release before step 16 - 2N = 8
        # (method.py)
        r = OTOv2Recipe(model=model or p.model, target_sparsity=0.5, decay_steps=p.decay_steps,
                        start_epoch=0, lmbda=5.0, epsilon=0.9, from_dense=True,
                        train=TrainConfig(epochs=4, lr=0.05, schedule="constant"))
    else:
        raise no_recipe("the OTOv2 host", p, ("smoke", "mini", "paper"))
    return r if target_sparsity is None else replace(r, target_sparsity=target_sparsity)
