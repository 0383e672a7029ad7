"""VGG-16-BN / VGG-19-BN for 32x32 inputs as used by Torch-Pruning's CIFAR benchmark.

Torch-Pruning's ``reproduce/engine/models/cifar/vgg.py`` (taken from RepDistiller) differs from
the ImageNet VGG in ways that matter for the published counts (VGG-19-BN, 100 classes:
20.09 M params, 512.73 M MACs), so they are reproduced here:

* convolutions keep their bias (as in the reference, even though BN follows);
* at 32x32 only the first three stages are followed by max-pooling; the last two stages both
  run at 4x4 (the reference pools after stage four only for 64x64 inputs);
* global average pooling and a single ``Linear(512, num_classes)`` classifier, no FC stack.
"""

import torch
from torch import nn

# Output channels per conv layer; "M" is a 2x2 max-pool.
CONFIGS = {
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, 512, 512, 512],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, 512, 512, 512, 512],
}


class CifarVGG(nn.Module):
    """conv3x3-BN-ReLU stack (``features``), global average pooling and ``classifier``."""

    def __init__(self, depth: int, num_classes: int = 10):
        super().__init__()
        layers, in_channels = [], 3
        for v in CONFIGS[depth]:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(in_channels, v, kernel_size=3, padding=1),
                           nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                in_channels = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(in_channels, num_classes)

        # Same initialisation as the reference so training recipes transfer unchanged.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.avgpool(self.features(x)), 1)
        return self.classifier(x)
