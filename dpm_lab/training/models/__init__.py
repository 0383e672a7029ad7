"""Model registry: one place that maps the names used in configs/CLIs to freshly initialised
networks, so experiments never depend on downloaded weights or ad-hoc constructors."""

from torch import nn
from torchvision.models import mobilenet_v2, resnet50

from .cifar_resnet import CifarResNet
from .vgg import CifarVGG
from .vit import vit_tiny


def _resnet50_cifar(num_classes: int) -> nn.Module:
    """torchvision ResNet-50 with a CIFAR stem: a 7x7/2 conv plus max-pool would shrink a
    32x32 image to 8x8 before the first stage, so use a 3x3/1 conv and no pooling instead."""
    model = resnet50(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    return model


_BUILDERS = {
    "resnet20": lambda n: CifarResNet(20, n),
    "resnet32": lambda n: CifarResNet(32, n),
    "resnet56": lambda n: CifarResNet(56, n),
    "resnet110": lambda n: CifarResNet(110, n),
    "vgg16_bn": lambda n: CifarVGG(16, n),
    "vgg19_bn": lambda n: CifarVGG(19, n),
    "resnet50": lambda n: resnet50(weights=None, num_classes=n),
    "resnet50_cifar": _resnet50_cifar,
    # beyond the papers' models: depthwise convolutions, and attention with LayerNorm (notebook 10)
    "mobilenet_v2": lambda n: mobilenet_v2(weights=None, num_classes=n),
    "vit_tiny": vit_tiny,
}
MODEL_NAMES = tuple(_BUILDERS)


# torchvision weights a recipe may start from (downloaded by torchvision on first use)
PRETRAINED = {"resnet50": "IMAGENET1K_V1"}


def pretrained_model(name: str) -> nn.Module:
    """``name`` with torchvision's pretrained ImageNet-1k weights (1000 classes), for recipes that
    start from them (OTOv2's ResNet-50 / ImageNet row)."""
    if name not in PRETRAINED:
        raise ValueError(f"no pretrained weights for {name!r}; available: {', '.join(PRETRAINED)}")
    return resnet50(weights=PRETRAINED[name])


def _check_name(name: str) -> None:
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODEL_NAMES)}")


def get_model(name: str, num_classes: int = 10) -> nn.Module:
    """Build a randomly initialised model; fail early and readably on bad arguments."""
    _check_name(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    return _BUILDERS[name](num_classes)


def input_size(name: str) -> tuple:
    """Example input shape for tracing (pruning dependency graphs, MAC counting): models
    are traced at the resolution they are trained at."""
    _check_name(name)
    return (1, 3, 224, 224) if name == "resnet50" else (1, 3, 32, 32)
