"""TPP (Trainability Preserving Pruning) as a method, and TPP × DPM, which is new (neither
paper has it).

``tpp``: choose the filters once (layer-wise filter L1), train ``regularise`` epochs with
:class:`~dpm_lab.hosts.tpp.algorithm.TPPRegularizer` (ramp, then stabilise with layer-by-layer hard
zeroing), zero what is left, remove, fine-tune. ``tpp+dpm``: the same regularisation without
the hard zeroing; fine-tuning then starts by handing the chosen filters to Smooth Pruning (they
reach zero after N steps) with Self-Rectifying, which may release a wrongly chosen filter. By
default a released filter is not replaced (TPP selects once), so the network ends larger;
``--released replace`` puts the next smallest-L1 free filter of the same layer in its place at
the next round (:class:`~dpm_lab.hosts.tpp.algorithm.ReplaceReleased`), so every layer ends at its
ratio.
"""
from __future__ import annotations

from ...experiments.method import (DEFAULT_PRUNE_PHASE, Method, finish_decay, rectifier,
                                   selection_rounds)
from ...pruning import ChannelGroups, NormSample, SmoothPruning, remove_channels
from ...training.engine import evaluate, fit
from ...training.metrics import example_input
from .algorithm import ReplaceReleased, TPPRegularizer, layerwise_selection


class TPP(Method):
    def prepare(self, model):
        ctx, recipe = self.ctx, self.ctx.res.recipe
        spe = len(ctx.data.train)
        self.groups = ChannelGroups(model, example_input(model, ctx.size))
        self.ids = layerwise_selection(self.groups, recipe.layer_ratio, recipe.layers,
                                       recipe.exclude)
        dpm = self.config["method"] == "tpp+dpm"
        tpp = TPPRegularizer(self.groups, self.ids, recipe.ramp_epochs * spe,
                             recipe.stabilize_epochs * spe, recipe.update_interval, recipe.r_max,
                             recipe.gram_weight, recipe.zero_interval, zero_out=not dpm)
        self.extra = {"selected": len(self.ids), "tpp_history": fit(
            model, ctx.data.train, ctx.data.test, recipe.regularise, [tpp],
            checkpoint=ctx.run_dir / "regularise.ckpt", resume=True, device=ctx.device,
            seed=ctx.seed, progress=ctx.progress, desc="tpp regularise", val_loader=ctx.data.val,
            precision=ctx.precision)}
        if dpm:
            N = recipe.decay_steps
            if self.config["options"].get("released") == "replace":
                # rounds as the core's (every N steps over the first half of fine-tuning); the
                # last one replaces the last releases, so every layer ends at its ratio
                rounds = selection_rounds(ctx.total_steps, N, DEFAULT_PRUNE_PHASE)
                selector, until = ReplaceReleased(self.groups, self.ids), None
            else:
                rounds, selector, until = [0], (lambda pruner, step: self.ids), N
            self.sp = SmoothPruning(self.groups, None, N, rounds=rounds,
                                    rectifier=rectifier(self.config, ctx.total_steps),
                                    input_size=ctx.size, selector=selector, release_until=until)
            self.sample = NormSample(self.sp)
            return
        self.sp = None
        tpp.zero_(tpp.pruned)  # layers the stabilise phase had not reached yet
        self.extra["top1_zeroed"] = evaluate(model, ctx.data.test, ctx.device)
        self.extra["history_tp"] = remove_channels(model, self.groups.split(self.ids), ctx.size)
        self.extra["top1_after_removal"] = evaluate(model, ctx.data.test, ctx.device)

    def hooks(self):
        return [self.sp, self.sample] if self.sp else []

    def finalize(self, model, history):
        if self.sp is None:
            return model, self.extra
        self.extra["norm_sample"] = self.sample.record()
        return finish_decay(self.sp, model, history, self.ctx, self.extra)
