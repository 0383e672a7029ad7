"""Pruning: groups -> selection -> decay (SP) -> rectification (SR) -> removal.

DPM on any model that Torch-Pruning can trace, in a few lines (a tiny, seconds-long example on
generated data; the README shows it on CIFAR-10):

>>> import torch
>>> from dpm_lab.training.config import TrainConfig
>>> from dpm_lab.training.data import TensorLoader, synthetic_dataset
>>> from dpm_lab.training.engine import fit
>>> from dpm_lab.training.metrics import macs_params
>>> from dpm_lab.training.models import get_model
>>> from dpm_lab.pruning import ChannelGroups, MacsTarget, SelfRectifying, SmoothPruning, finalize
>>> train, test = synthetic_dataset(256, 128)
>>> train_loader = TensorLoader(train, 64, train=True)          # 4 steps per epoch
>>> test_loader = TensorLoader(test, 128, train=False)
>>> model = get_model("resnet20")
>>> groups = ChannelGroups(model, torch.randn(1, 3, 32, 32))    # Torch-Pruning dependency groups
>>> dpm = SmoothPruning(groups, MacsTarget(0.5), decay_steps=4, rounds=[0, 4],
...                     rectifier=SelfRectifying(window=2))
>>> history = fit(model, train_loader, test_loader, TrainConfig(epochs=3, lr=0.05),
...               hooks=[dpm], device="cpu", progress=False)
>>> model, pruning_history = finalize(model, dpm)                # remove the zeroed channels
>>> macs_params(model)[0] <= 0.5 * dpm.dense_macs
True
"""
from .decay import DECAYING, FREE, PRUNED, RELEASED, SmoothPruning
from .finalize import (effective_macs_params, finalize, load_pruned, removal_check, remove_channels,
                       save_pruned)
from .groups import ChannelGroups, output_layer
from .iterative import SCHEDULES, IterativePruning, agp_scheduler, iterative_rounds
from .norm_sample import NormSample, thin
from .rectify import SelfRectifying
from .selection import (CRITERIA, ChannelRatio, MacsTarget, accumulate_gradients, make_importance,
                        scores, select)
from .single_step import single_step_prune

__all__ = ["ChannelGroups", "output_layer", "ChannelRatio", "MacsTarget", "CRITERIA",
           "make_importance", "scores", "accumulate_gradients", "select", "SmoothPruning",
           "SelfRectifying", "single_step_prune", "remove_channels", "effective_macs_params",
           "finalize", "NormSample", "thin", "removal_check", "save_pruned", "load_pruned", "FREE",
           "DECAYING", "PRUNED", "RELEASED", "IterativePruning", "SCHEDULES", "agp_scheduler",
           "iterative_rounds"]
