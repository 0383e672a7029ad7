"""Later selection rounds: structures already taken (decaying, pruned, released) must not shift
the ranking of the free ones through their group's normaliser (FreeNormalized)."""
import copy

import pytest
import torch
import torch_pruning as tp

from dpm_lab.hosts.depgraph.algorithm import make_pruner
from dpm_lab.pruning import (CRITERIA, DECAYING, FREE, PRUNED, RELEASED, ChannelGroups, MacsTarget,
                             SmoothPruning, decay, remove_channels, scores, select)
from dpm_lab.pruning.selection import FreeNormalized, free_channels
from dpm_lab.training.models import get_model, input_size
from conftest import TwoBranches, randomize_bn

TOY = (1, 3, 8, 8)


def _toy(criterion):
    """A float64 toy pruner whose model has random BN affines and random gradients (Taylor);
    selection rounds are called by hand."""
    torch.manual_seed(0)
    model = TwoBranches()
    randomize_bn(model, 0)
    model.double()
    g = torch.Generator().manual_seed(1)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=g, dtype=p.dtype)
    groups = ChannelGroups(model, torch.randn(TOY, dtype=torch.float64))
    assert sorted(gr.root for gr in groups.groups) == ["a", "b"]
    return SmoothPruning(groups, MacsTarget(0.4), 4, criterion, rounds=[0, 10], input_size=TOY)


@pytest.mark.parametrize("criterion", CRITERIA)
@pytest.mark.parametrize("status,factor", [(PRUNED, 0.0), (DECAYING, 0.3), (RELEASED, 0.5)],
                         ids=["pruned", "decaying", "released"])
def test_taken_structures_leave_the_ranking_of_the_free_ones_unchanged(criterion, status, factor,
                                                                        monkeypatch):
    """The same later round on two copies that differ only in the taken structures' weights
    (as selected, or zeroed / scaled down): the scores the round ranks the free structures by
    are equal bit for bit, hence their order, and it picks the same replacements."""
    ranked = []

    def recording_select(groups, s, *args, **kwargs):
        ranked.append(s)
        return select(groups, s, *args, **kwargs)

    monkeypatch.setattr(decay, "select", recording_select)
    reference, shrunk = _toy(criterion), _toy(criterion)
    taken = reference.groups.structure_ids("a", range(4))  # a's 4-7 and all of b stay free
    for sp in (reference, shrunk):
        sp.status[taken] = status
    keep = torch.ones(shrunk.groups.num_structures, dtype=torch.float64)
    keep[taken] = factor
    if status == PRUNED:  # every slice zeroed, consumers' columns too
        shrunk.groups.scale_(keep)
    else:  # the decay's scope: producer slices only
        shrunk.groups.scale_(keep, entries=shrunk.entries, rest_factor=torch.ones_like(keep))
    free = reference.status == FREE
    picked = []
    for sp in (reference, shrunk):
        torch.manual_seed(2)  # the random criterion draws the same scores for both
        sp.round(10)
        picked.append((sp.status == DECAYING) & free)
    assert torch.equal(ranked[0][free].argsort(), ranked[1][free].argsort())
    assert torch.equal(ranked[0][free], ranked[1][free])
    assert picked[0].any() and torch.equal(picked[0], picked[1])


def _resnet20(dtype):
    torch.manual_seed(0)
    model = get_model("resnet20")
    randomize_bn(model, 0)
    model.to(dtype)
    for p in model.parameters():  # for the Taylor criterion
        p.grad = torch.randn_like(p)
    return model, ChannelGroups(model, torch.randn(input_size("resnet20"), dtype=dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("criterion", CRITERIA)
def test_with_nothing_taken_the_scores_are_the_criterions_own(criterion, dtype):
    """Step 0 (nothing decaying yet) ranks exactly as before FreeNormalized, so dense-start
    selections and runs with a single round are unchanged."""
    _, groups = _resnet20(dtype)
    torch.manual_seed(3)
    own = scores(groups, criterion)
    torch.manual_seed(3)
    nothing = torch.zeros(groups.num_structures, dtype=torch.bool)
    nothing_taken = scores(groups, criterion, exclude=nothing)
    assert torch.equal(own, nothing_taken)


def test_free_scores_are_those_of_the_model_with_the_taken_structures_removed():
    """Zeroed (pruned) structures: the free ones score as Torch-Pruning's l2 scores them on the
    physically pruned model, normaliser included. Tolerance: Torch-Pruning sums in float32, and
    the two models add their terms in different orders."""
    model, groups = _resnet20(torch.float64)
    taken = torch.zeros(groups.num_structures, dtype=torch.bool)
    for g in groups.groups:  # the first quarter of every group, and its third channel
        taken[g.offset:g.offset + g.size // 4] = True
        taken[g.offset + 2] = True
    groups.scale_((~taken).double())
    free_scores = scores(groups, "l2", exclude=taken)[~taken]
    removed = copy.deepcopy(model)
    remove_channels(removed, groups.split(taken.nonzero().flatten()), input_size("resnet20"))
    after = ChannelGroups(removed, torch.randn(input_size("resnet20"), dtype=torch.float64))
    assert [g.root for g in after.groups] == [g.root for g in groups.groups]
    assert torch.allclose(free_scores, scores(after, "l2"), rtol=1e-6, atol=0)


def test_depgraph_host_and_core_normalise_alike():
    """The DepGraph host's pruner and the core score with the same FreeNormalized: with every
    channel free it is Torch-Pruning's own importance; with a free mask, the host's scores are
    the core's under the host's normaliser."""
    model, groups = _resnet20(torch.float64)
    pruner = make_pruner(model, input_size("resnet20"))
    own = tp.importance.GroupMagnitudeImportance(p=2, normalizer="max")
    free = torch.rand(groups.num_structures, generator=torch.Generator().manual_seed(4)) > 0.3
    by_root = {gr[0].dep.target.module: meta for gr, meta in zip(groups.groups_tp, groups.groups)}

    def host_scores():
        out = torch.full((groups.num_structures,), float("nan"))
        for group in pruner.DG.get_all_groups(ignored_layers=pruner.ignored_layers,
                                              root_module_types=pruner.root_module_types):
            meta = by_root[group[0].dep.target.module]
            out[meta.offset + meta.position] = pruner.estimate_importance(group).float()
        return out

    assert torch.equal(host_scores(), groups.importance(own))
    pruner.importance.free = free_channels(groups, free)
    assert torch.equal(host_scores(), scores(groups, "l2", importance=own, exclude=~free))
    assert not torch.equal(host_scores(), groups.importance(own))  # the mask acted


def test_a_normaliser_that_cannot_be_restricted_is_named():
    with pytest.raises(ValueError, match="'gaussian'"):
        FreeNormalized(tp.importance.GroupMagnitudeImportance(normalizer="gaussian"))
