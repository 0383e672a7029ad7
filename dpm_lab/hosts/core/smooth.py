"""Smooth Pruning and DPM (core): selection rounds every N steps over the first part of
fine-tuning, each selected structure's norm pinned to a schedule that reaches zero after N steps,
Self-Rectifying releasing wrong choices (``dpm``; ``sp`` runs without it)."""
from __future__ import annotations

import torch

from ...experiments.method import Method, finish_decay, rectifier, selection_rounds
from ...pruning import NormSample, SmoothPruning, scores
from .single_step import core_groups, core_target


class SmoothDecay(Method):
    def prepare(self, model):
        o, ctx = self.config["options"], self.ctx
        groups = core_groups(model, ctx)
        self.dense_l2 = scores(groups, "l2")
        rounds = selection_rounds(ctx.total_steps, o["decay_steps"], o["prune_phase"])
        self.pruner = SmoothPruning(groups, core_target(o), o["decay_steps"], o["criterion"],
                                    rounds, rectifier(self.config, ctx.total_steps), ctx.size)
        self.sample = NormSample(self.pruner)

    def hooks(self):
        return [self.pruner, self.sample]

    def finalize(self, model, history):
        extra = {"norm_sample": self.sample.record()}
        if self.pruner.rectifier:
            extra["importance_percentiles"] = importance_percentiles(self.pruner, self.dense_l2)
        return finish_decay(self.pruner, model, history, self.ctx, extra)


def importance_percentiles(pruner: SmoothPruning, dense_l2: torch.Tensor) -> dict:
    """Where released and pruned structures stood in the dense model's L2 ranking (percentile,
    0 = least important): does Self-Rectifying release what a magnitude ranking would keep?"""
    rank = dense_l2.argsort().argsort().double() / max(len(dense_l2) - 1, 1) * 100
    out = {}
    for name, ids in (("released", pruner.released_ids()), ("pruned", pruner.pruned_ids())):
        out[name] = float(rank[ids].mean()) if len(ids) else None
    return out
