"""DPM on torchvision's classification models: every architecture family that Torch-Pruning's own
pruner handles goes through Smooth Pruning (N = 1 and N = 3) and removal, in float64.

One model per family, its smallest member (``ZOO``): the larger members are the same code at
other widths and depths, and float64 on two CPU cores makes each model cost seconds. Set
``DPM_LAB_ZOO=all`` to run every model of ``torchvision.models.list_models`` instead (minutes to
hours). Families (torchvision modules) whose models Torch-Pruning itself cannot prune with its
defaults are listed in ``TP_CANNOT`` with the reason and the failure it gives (exception type,
message, the function that raises it), and a test checks that it still fails so on their
members that fit here, so the list stays true and a bug of this harness is never taken for it.

Zeroed structures leave a network's function unchanged when removed only where no layer mixes
a removed channel with the kept ones: LayerNorm (ConvNeXt) normalises over the channel
dimension, so a zero channel still counts in its mean and variance until it is removed. Such
groups are marked ``exact=False`` by :class:`ChannelGroups`; the equality check prunes only the
exact groups, and a separate check prunes everything and asserts the MACs fall.
"""
import os
import warnings

import pytest
import torch
import torch.nn as nn
import torch_pruning as tp
import torchvision

from dpm_lab.pruning import ChannelGroups, ChannelRatio, SmoothPruning, finalize, scores, select
from dpm_lab.training.metrics import macs_params
from conftest import Stepper, calibrate_bn

NEVER = 10**9

# family -> its smallest member and the input side it needs (64 unless the model needs more)
ZOO = {
    "alexnet": 64, "convnext_tiny": 64, "densenet121": 64, "efficientnet_b0": 64,
    "efficientnet_v2_s": 64, "googlenet": 64, "inception_v3": 96, "mnasnet0_5": 64,
    "mobilenet_v2": 64, "mobilenet_v3_small": 64, "regnet_x_400mf": 64, "regnet_y_400mf": 64,
    "resnet18": 64, "resnet50": 64, "resnext50_32x4d": 64, "squeezenet1_0": 64, "vgg11_bn": 64,
    "wide_resnet50_2": 64,
}
# torchvision module (one architecture family) -> the members checked below, why Torch-Pruning's
# own pruner fails on them, and how (exception type, message pattern, the function raising it).
# The whole family is left out: its members share the failing code.
TP_CANNOT = {
    "vision_transformer": (["vit_b_16"], "the model reshapes conv_proj's output with its stored "
                           "hidden_dim, which Torch-Pruning does not update",
                           (RuntimeError, r"shape '\[1, 768, 4\]' is invalid for input of size",
                            "_process_input")),
    "shufflenetv2": (["shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5",
                      "shufflenet_v2_x2_0"],
                     "Torch-Pruning's reshape index mapping of the channel shuffle divides by zero",
                     (ZeroDivisionError, "integer division or modulo by zero",
                      "update_reshape_index_mapping")),
    "swin_transformer": (["swin_s"], "Torch-Pruning's concat index mapping fails (TypeError) on "
                         "swin_s; on swin_t its flatten index mapping grows past 10 GB and on the "
                         "V2 models past 24 GB, too large to show here",
                         (TypeError, r"unsupported operand type\(s\) for \+: 'int' and 'NoneType'",
                          "update_concat_index_mapping")),
    "maxvit": ([], "needs 224 x 224 inputs (too slow in float64 here); its window partition "
                   "reshapes with stored sizes", None),
}


def _family(name: str) -> str:
    """The torchvision module that defines ``name``: its architecture family."""
    return torchvision.models.get_model_builder(name).__module__.rsplit(".", 1)[-1]


def _build(name: str) -> tuple[nn.Module, tuple[int, ...]]:
    kw = {"weights": None, "num_classes": 10}
    if name in ("googlenet", "inception_v3"):
        kw.update(aux_logits=False, init_weights=True)
    side = ZOO.get(name, 64)
    if name.startswith("vit"):
        kw["image_size"], side = 32, 32
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = torchvision.models.get_model(name, **kw)
    return model.double(), (1, 3, side, side)


def _classifier(model: nn.Module) -> nn.Module:
    """The last layer with weights (the classifier: a Linear, or SqueezeNet's 1x1 conv)."""
    return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))][-1]


def _tp_prune(model: nn.Module, x: torch.Tensor) -> None:
    """Torch-Pruning's own pruner with its defaults (30 % of every group by magnitude, the
    classifier kept), then a forward pass through the pruned model."""
    pruner = tp.pruner.BasePruner(model, x, importance=tp.importance.GroupMagnitudeImportance(),
                                  ignored_layers=[_classifier(model)], pruning_ratio=0.3)
    pruner.step()
    model(x)


def _models():
    if os.environ.get("DPM_LAB_ZOO") == "all":
        return [n for n in torchvision.models.list_models(module=torchvision.models)
                if _family(n) not in TP_CANNOT]
    return list(ZOO)


def _decay(model, size, N: int, exact_only: bool):
    """Smooth Pruning of 30 % of every group (of the exact groups only, with ``exact_only``)
    over ``N`` SGD steps, starting at the first; returns the groups and the pruner."""
    groups = ChannelGroups(model, torch.randn(*size, dtype=torch.float64),
                           ignored_layers=[_classifier(model)])
    pruner = SmoothPruning(groups, ChannelRatio(0.3), N, rounds=[NEVER], input_size=size)
    ids = select(groups, scores(groups, "l2"), ChannelRatio(0.3))
    if exact_only:
        exact = torch.tensor([g.exact for g in groups.groups])
        ids = ids[exact[groups.group_of[ids]]]
    run = Stepper(model, lr=0.01, seed=2, dtype=torch.float64, input_shape=size[1:],
                  batch_size=2)
    pruner.start_decay(ids, run.opt)
    model.train()
    for _ in range(N - 1):  # the first application came with start_decay
        run.step(pruner)
    return groups, pruner


def decay_and_remove(name: str, N: int) -> dict:
    """The zoo case (also run by ``benchmarks/zoo.py``): build ``name``, decay 30 % of every
    exact group over N steps, remove; the logits on two inputs before and after removal, the
    MACs before and after, and the pruner."""
    model, size = _build(name)
    groups, pruner = _decay(model, size, N, exact_only=True)
    zeroed = bool((groups.squared_norms()[pruner.pruned_ids()] == 0).all())
    calibrate_bn(model, size, dtype=torch.float64)
    x = torch.randn(2, *size[1:], dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        soft = model(x)
    dense_macs = macs_params(model, size)[0]
    finalize(model, pruner, size)
    with torch.no_grad():
        removed = model(x)
    return dict(size=size, groups=groups, pruner=pruner, zeroed=zeroed, soft=soft,
                removed=removed, dense_macs=dense_macs, macs=macs_params(model, size)[0])


@pytest.mark.parametrize("N", [1, 3])
@pytest.mark.parametrize("name", _models())
def test_zoo_model_decays_and_removes_exactly(name, N):
    case = decay_and_remove(name, N)
    assert len(case["pruner"].pruned_ids()) > 0 and len(case["pruner"].decaying_ids()) == 0
    assert case["zeroed"]
    assert case["soft"].abs().max() > 1e-3              # a real signal, not a vanishing one
    assert (case["removed"] - case["soft"]).abs().max() <= 1e-9
    assert case["macs"] < case["dense_macs"]


def test_zoo_model_with_channel_mixing_norms_prunes_every_group():
    """ConvNeXt, every group, the LayerNorm-coupled ones too: removal works and the MACs fall (the
    outputs change at removal there, by design of LayerNorm; see the module docstring)."""
    model, size = _build("convnext_tiny")
    groups, pruner = _decay(model, size, 1, exact_only=False)
    assert not all(g.exact for g in groups.groups)
    dense_macs = macs_params(model, size)[0]
    finalize(model, pruner, size)
    assert macs_params(model, size)[0] < dense_macs


@pytest.mark.parametrize("family", list(TP_CANNOT))
def test_families_left_out_are_ones_torch_pruning_cannot_prune(family):
    members, why, failure = TP_CANNOT[family]
    if not members:
        pytest.skip(why)  # too slow or too large to show here
    error, message, raised_in = failure
    for name in members:
        assert _family(name) == family
        model, size = _build(name)
        model.float()
        x = torch.randn(*size)
        with pytest.raises(error, match=message) as failed:
            _tp_prune(model, x)
            pytest.fail(f"Torch-Pruning prunes {name} now: add {family} to ZOO")
        assert failed.traceback[-1].name == raised_in, failed.getrepr()


def test_the_zoo_covers_every_family_torch_pruning_can_prune():
    """Every torchvision family is either in ZOO (through its smallest member) or left out with a
    reason, so a new family in torchvision cannot go untested unnoticed."""
    families = {_family(n) for n in torchvision.models.list_models(module=torchvision.models)}
    assert families == {_family(n) for n in ZOO} | set(TP_CANNOT)


def test_an_unsupported_layer_is_named_with_what_to_do():
    model = nn.Sequential(nn.Linear(8, 16), nn.LSTM(16, 16, batch_first=True))
    head = nn.Linear(16, 10)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.head = model, head

        def forward(self, x):
            return self.head(self.body(x)[0][:, -1])

    net = Net()
    with pytest.raises(NotImplementedError, match=r"'body.1' \(LSTM\).*ignored_layers"):
        ChannelGroups(net, torch.randn(2, 5, 8))
