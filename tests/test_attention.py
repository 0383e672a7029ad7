"""Attention heads as structures: converting nn.MultiheadAttention to a qkv projection changes
nothing, and decaying whole heads then removing them leaves the ViT's function unchanged
(float64)."""
import copy

import pytest
import torch
import torch.nn as nn

from dpm_lab.pruning import (ChannelGroups, ChannelRatio, MacsTarget, SmoothPruning, finalize,
                             load_pruned, remove_channels, save_pruned, scores, select)
from dpm_lab.training.metrics import macs_params
from dpm_lab.training.models import get_model, input_size
from dpm_lab.training.models.attention import QKVAttention, split_attention
from conftest import Stepper

NEVER = 10**9
SIZE = input_size("vit_tiny")


def _vit():
    torch.manual_seed(0)
    model = get_model("vit_tiny").double()
    nn.init.normal_(model.heads.head.weight, std=0.1)  # torchvision starts it at zero
    return model


def _x(n=4):
    return torch.randn(n, *SIZE[1:], dtype=torch.float64, generator=torch.Generator().manual_seed(1))


def test_split_attention_keeps_the_function():
    model = _vit().eval()
    with torch.no_grad():
        before = model(_x())
        split_attention(model)
        after = model(_x())
    assert not any(isinstance(m, nn.MultiheadAttention) for m in model.modules())
    assert sum(isinstance(m, QKVAttention) for m in model.modules()) == 6
    assert (after - before).abs().max() <= 1e-12 and before.abs().max() > 1e-3


def test_head_granularity_has_one_structure_per_head():
    model = split_attention(_vit())
    groups = ChannelGroups(model, _x(1), granularity="head")
    assert [g.unit for g in groups.groups] == ["head"] * 6
    assert groups.num_structures == 6 * 4
    # a head owns its q, k and v rows (3 x 32 of qkv's 384) and its 32 columns of proj
    assert groups.split([0]) == {groups.groups[0].root: [*range(0, 32), *range(128, 160),
                                                         *range(256, 288)]}
    # at channel granularity the qkv inner width is never a structure (heads only)
    channel = ChannelGroups(model, _x(1))
    assert not any(g.root.endswith(".qkv") for g in channel.groups)


@pytest.mark.parametrize("N", [1, 3])
def test_decayed_heads_are_removed_without_changing_outputs(N, tmp_path):
    model = split_attention(_vit())
    groups = ChannelGroups(model, _x(1), granularity="head")
    pruner = SmoothPruning(groups, ChannelRatio(0.25), N, rounds=[NEVER], input_size=SIZE)
    ids = select(groups, scores(groups, "l2"), ChannelRatio(0.25))
    assert len(ids) == 6                                  # one head of four in each block
    run = Stepper(model, lr=0.01, seed=2, dtype=torch.float64, input_shape=SIZE[1:], batch_size=2)
    pruner.start_decay(ids, run.opt)
    model.train()
    for _ in range(N - 1):
        run.step(pruner)
    assert (groups.squared_norms()[pruner.pruned_ids()] == 0).all()
    model.eval()
    with torch.no_grad():
        soft = model(_x())
    dense_macs = macs_params(model, SIZE)[0]
    _, history = finalize(model, pruner, SIZE)
    with torch.no_grad():
        removed = model(_x())
    assert (removed - soft).abs().max() <= 1e-9 and soft.abs().max() > 1e-3
    assert [m.num_heads for m in model.modules() if isinstance(m, QKVAttention)] == [3] * 6
    assert macs_params(model, SIZE)[0] < dense_macs
    # a pruned ViT reloads into a fresh converted one: the head count follows the weights
    save_pruned(tmp_path / "vit.pt", model, history)
    fresh = load_pruned(tmp_path / "vit.pt", split_attention(_vit()), SIZE).eval()
    with torch.no_grad():
        assert torch.equal(fresh(_x()), removed)


def test_heads_are_selected_by_macs_target():
    model = split_attention(_vit())
    groups = ChannelGroups(model, _x(1), granularity="head")
    dense = macs_params(model, SIZE)[0]
    target = MacsTarget(0.9)
    ids = select(groups, scores(groups, "l2"), target, input_size=SIZE, dense_macs=dense)
    clone = copy.deepcopy(model)
    remove_channels(clone, groups.split(ids), SIZE)
    assert macs_params(clone, SIZE)[0] <= 0.9 * dense


def test_head_granularity_errors_name_the_fix():
    with pytest.raises(ValueError, match="split_attention"):
        ChannelGroups(_vit(), _x(1), granularity="head")
    with pytest.raises(ValueError, match=r"granularity 'filter' is not one of channel, head"):
        ChannelGroups(_vit(), _x(1), granularity="filter")
