"""The run options: one table shared by ``run``, ``sweep`` and experiment files, each option a
field of :class:`~dpm_lab.experiments.runspec.RunSpec`, and the groups ``--help`` lists them in.

The common, core and Self-Rectifying options are declared here; each host declares its own in its
folder (``dpm_lab/hosts/<host>/options.py``), with its help group, and the registry
(:mod:`dpm_lab.hosts`) brings them in, in registry order.
"""
from __future__ import annotations

from ..hosts import HOSTS, METHODS, REGISTRY
from ..pruning import CRITERIA
from ..pruning.iterative import SCHEDULES as PRUNE_SCHEDULES
from ..pruning.rectify import RATE_REFERENCES, RULES
from ..training.config import PRECISIONS, SCHEDULES
from ..training.data import DATASET_NAMES
from ..training.models import MODEL_NAMES
from .host import RECIPE_FIELDS
from .option_types import (fraction, integer, number, on_off, open_fraction, positive_int, real,
                           val_fraction)
from .runspec import SR_DEFAULTS

TRAIN_FIELDS = ("seed", "model", "dataset", "epochs", "val_fraction",
                "precision") + RECIPE_FIELDS
ALL_METHODS = tuple(dict.fromkeys(m for ms in METHODS.values() for m in ms))

# (flags, RunSpec field, argparse keywords). Defaults are None: the profile's or recipe's value.
RUN_OPTIONS = [
    (("--host",), "host", dict(choices=HOSTS, help="core: DPM's own selection (default); "
                                                   "depgraph: Torch-Pruning group_sl; otov2: DHSPG; "
                                                   "gatedecorator: gated BN + Tick-Tock")),
    (("--method", "--methods"), "method",
     dict(choices=ALL_METHODS, help="core: single-step | sp | dpm | iterative | tpp | tpp+dpm; "
                                    "hosts: host | sp | dpm (default dpm; a sweep: every method of "
                                    "the host but TPP's, which a sweep runs when named)")),
    (("--seed", "--seeds"), "seed",
     dict(type=integer, help="random seed (default 0; a sweep: 0 1 2)")),
    (("--model",), "model", dict(choices=MODEL_NAMES, help="override the profile's model")),
    (("--data",), "dataset", dict(choices=DATASET_NAMES, help="override the profile's dataset")),
    (("--epochs",), "epochs", dict(type=positive_int, help="epochs of the pruning phase "
                                   "(fine-tuning; OTOv2's DHSPG run); milestones scale with it")),
    (("--lr",), "lr", dict(type=number(float, lambda v: v > 0, "a number > 0"),
                           help="learning rate of the pruning phase (default: the recipe's)")),
    (("--schedule",), "schedule", dict(choices=SCHEDULES, help="learning-rate schedule of the "
                                                             "pruning phase")),
    (("--nesterov",), "nesterov", dict(type=on_off, help="Nesterov momentum: on or off")),
    (("--label-smoothing",), "label_smoothing",
     dict(type=val_fraction, help="label smoothing of the pruning phase, in [0, 1)")),
    (("--weight-decay",), "weight_decay",
     dict(type=number(float, lambda v: v >= 0, "a number >= 0"), help="weight decay of the "
                                                                      "pruning phase")),
    (("--val-fraction",), "val_fraction",
     dict(type=val_fraction, help="hold out this fraction of the training split for "
                                  "validation (default: the profile's, 0)")),
    (("--dense-epochs",), "dense_epochs",
     dict(type=positive_int, help="epochs of the dense run the pruning starts from (default: "
                                  "the profile's; another value trains its own dense model)")),
    (("--dense-lr",), "dense_lr",
     dict(type=number(float, lambda v: v > 0, "a number > 0"),
          help="learning rate of the dense run the pruning starts from (default: the "
               "profile's)")),
    (("--precision",), "precision",
     dict(choices=PRECISIONS, help="arithmetic of every training phase, the dense run's "
                                   "included: fp32 (default) or bf16 (forward pass and loss "
                                   "under bfloat16 autocast; parameters stay float32; "
                                   "evaluation in fp32)")),
    (("--target-macs", "--targets"), "target_macs",
     dict(type=fraction, help="core, gatedecorator: fraction of dense MACs to keep (default "
                              "0.5; gatedecorator: the recipe's)")),
    (("--channel-ratio",), "channel_ratio",
     dict(type=open_fraction, help="core, instead of --target-macs: fraction of every "
                                   "group's channels to remove")),
    (("--layer-ratio",), "layer_ratio",
     dict(type=open_fraction, help="core tpp, tpp+dpm, single-step: fraction of the filters of "
                                   "every TPP layer to remove (default 0.5)")),
    (("--criterion",), "criterion", dict(choices=CRITERIA, help="core: importance criterion "
                                                                "(default l2)")),
    (("--calibration-batches",), "calibration_batches",
     dict(type=positive_int, help="core, --criterion taylor: batches whose gradients rank the "
                                  "step-0 selection (default 4)")),
    (("--prune-phase",), "prune_phase",
     dict(type=fraction, help="sp/dpm (core, depgraph), iterative: fraction of fine-tuning "
                              "during which selection rounds run (default 0.5)")),
    (("--decay-steps",), "decay_steps",
     dict(type=positive_int, help="N, optimiser steps for a selected channel to decay to zero "
                                  "(default: the profile's); iterative: the N of the DPM rounds "
                                  "whose span (and, by default, count) it prunes in")),
    (("--iterative-steps",), "iterative_steps",
     dict(type=positive_int, help="iterative: k, the rounds of physical removal (default: as "
                                  "many as DPM's selection rounds)")),
    (("--prune-schedule",), "prune_schedule",
     dict(choices=tuple(PRUNE_SCHEDULES), help="iterative: how much each removal round prunes, "
                                               "linear (Torch-Pruning's scheduler, default) or "
                                               "agp (cubic, Zhu & Gupta 2017)")),
    (("--t-rate",), "t_rate",
     dict(type=real, help=f"dpm: threshold on C_rate (default {SR_DEFAULTS['t_rate']})")),
    (("--t-len",), "t_len",
     dict(type=real, help=f"dpm: threshold on C_len (default {SR_DEFAULTS['t_len']})")),
    (("--rule",), "rule", dict(choices=RULES, help="dpm: release when all or any signal is over "
                                                   f"its threshold (default {SR_DEFAULTS['rule']})")),
    (("--window",), "window", dict(type=positive_int, help="dpm: steps of the moving average of "
                                                           "C_rate and C_len (default per "
                                                           f"profile: {SR_DEFAULTS['window']}; "
                                                           "smoke 2)")),
    (("--rate-reference",), "rate_reference",
     dict(choices=RATE_REFERENCES, help="dpm: what C_rate is measured against "
                                        f"(default {SR_DEFAULTS['rate_reference']})")),
    *(option for e in REGISTRY.values() for option in e.options),
]


# ``run --help`` and ``sweep --help`` list the options in these groups, in this order: a reader
# looking for what applies to one host finds it under that host's heading. An option of
# RUN_OPTIONS missing here lands in the common group (tests/test_cli.py checks none is).
OPTION_GROUPS = {
    "common options": ("where runs go, the method, the model and data, the training recipe",
                       ("host", "method", "seed", "model", "dataset", "epochs", "lr", "schedule",
                        "nesterov", "label_smoothing", "weight_decay", "val_fraction",
                        "dense_epochs", "dense_lr", "precision")),
    "core (--host core)": ("DPM's own selection, and SP's and DPM's schedule (also --host "
                           "depgraph)",
                           ("target_macs", "channel_ratio", "layer_ratio", "criterion",
                            "calibration_batches", "prune_phase", "decay_steps",
                            "iterative_steps", "prune_schedule")),
    "Self-Rectifying (--method dpm, tpp+dpm)": ("when a decaying structure is released",
                                                ("t_rate", "t_len", "rule", "window",
                                                 "rate_reference")),
    # each host's own options, under its own heading
    **{e.option_group[0]: (e.option_group[1], tuple(dest for _, dest, _ in e.options))
       for e in REGISTRY.values() if e.option_group},
}
