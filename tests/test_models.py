import re

import pytest
import torch
import torch_pruning as tp
from torch import nn

from dpm_lab.training.models import MODEL_NAMES, get_model, input_size


def final_linear(model: nn.Module) -> nn.Linear:
    """The output layer: its out_features are the classes and must never be pruned."""
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


@pytest.mark.parametrize("num_classes", [10, 100])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_shape(name, num_classes):
    model = get_model(name, num_classes)
    with torch.no_grad():
        out = model(torch.randn(2, *input_size(name)[1:]))
    assert out.shape == (2, num_classes)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_traces_with_torch_pruning(name):
    model = get_model(name).eval()
    dg = tp.DependencyGraph().build_dependency(model, example_inputs=torch.randn(input_size(name)))
    groups = list(dg.get_all_groups(ignored_layers=[final_linear(model)],
                                    root_module_types=[nn.Conv2d, nn.Linear]))
    assert groups


# Published figures, not tuned to our output. Each tolerance covers the rounding of the
# figure as published (e.g. "1.7 M" stands for anything in 1.65-1.75 M, +-2.9 %) plus ~1 % for
# counter conventions (whether BN/ReLU/pooling count as MACs: He et al. report 253 M for
# ResNet-110, TP's counter gives 255.8 M). They stay below the errors they must catch: one
# block more or less in ResNet-56 is ~4 % of its MACs, an extra 512x512 FC in VGG-19 +1.3 %
# params, a wrong pooling layout in VGG tens of percent.
PUBLISHED = [
    # name, classes, params, MACs, rel. tolerance; source
    ("resnet20", 10, 0.27e6, 41e6, 0.02),  # He et al. 2016, Table 6; 41 M MACs commonly cited
    ("resnet56", 10, 0.86e6, 127.12e6, 0.01),  # Torch-Pruning CIFAR-10 log
    ("resnet110", 10, 1.7e6, 253e6, 0.03),  # He et al. 2016, Table 6 (2 significant digits)
    ("vgg19_bn", 100, 20.09e6, 512.73e6, 0.005),  # Torch-Pruning CIFAR-100 log
    ("resnet50", 1000, 25.56e6, 4.09e9, 0.01),  # torchvision model docs (25,557,032 params)
]


@pytest.mark.parametrize("name, num_classes, params, macs, rel", PUBLISHED)
def test_matches_published_counts(name, num_classes, params, macs, rel):
    model = get_model(name, num_classes).eval()
    got_macs, got_params = tp.utils.count_ops_and_params(model, torch.randn(input_size(name)))
    assert got_params == pytest.approx(params, rel=rel)
    assert got_macs == pytest.approx(macs, rel=rel)


def test_unknown_name_lists_choices():
    with pytest.raises(ValueError, match="'foo'") as err:
        get_model("foo")
    assert all(name in str(err.value) for name in MODEL_NAMES)
    with pytest.raises(ValueError, match="'foo'"):
        input_size("foo")


@pytest.mark.parametrize("bad", [1, 0, -3, 2.5, "10", True])
def test_bad_num_classes(bad):
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        get_model("resnet20", bad)
