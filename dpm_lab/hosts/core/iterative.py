"""Iterative pruning (core): the channels of the target removed physically in k rounds spread
over the span of fine-tuning in which DPM's selection rounds fall, the amount per round following
a linear or the cubic AGP schedule (:mod:`dpm_lab.pruning.iterative`). Same criterion, target,
dense checkpoint and epochs as single-step, SP and DPM; with k = 1 it is single-step pruning."""
from __future__ import annotations

from ...experiments.method import Method, selection_rounds
from ...pruning import IterativePruning, accumulate_gradients, iterative_rounds
from .single_step import core_target


class Iterative(Method):
    def prepare(self, model):
        o, ctx = self.config["options"], self.ctx
        if "calibration_batches" in o:  # a gradient criterion ranks round 0 on these
            accumulate_gradients(model, ctx.data.train, o["calibration_batches"], ctx.device)
        # the span and, by default, the count of DPM's rounds at the same N and prune phase
        dpm = selection_rounds(ctx.total_steps, o["decay_steps"], o["prune_phase"])
        rounds = iterative_rounds(o["iterative_steps"] or len(dpm), dpm[-1])
        self.pruner = IterativePruning(model, core_target(o), rounds, o["criterion"],
                                       o["prune_schedule"], ctx.size)

    def hooks(self):
        return [self.pruner]

    def finalize(self, model, history):
        p = self.pruner
        return model, {"selected": len(p.removed_ids()), "history_tp": p.history,
                       "prune_rounds": p.round_log}
