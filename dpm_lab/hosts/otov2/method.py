"""OTOv2 (DHSPG over zero-invariant groups) as a method: the host is DHSPG as OTOv2 defines it;
with SP/DPM, DHSPG's projection hands groups to Smooth Pruning, the projections stop N steps
before the end (so every decay finishes), and the deviations the recipe names are applied. What
Self-Rectifying reads, ``sr_signal``, is in the options only when it is not the default (the raw
gradient), like TPP's ``released``: the options hold the deviation, so asking for the default by
name is the same run, with the same id, as not asking."""
from __future__ import annotations

from ...experiments.method import Method, finish_decay, rectifier
from ...pruning import ChannelGroups, SmoothPruning, effective_macs_params, remove_channels
from ...training.engine import evaluate
from ...training.metrics import example_input
from .algorithm import DHSPG, SparsityLog, pruned_groups


class OTOv2(Method):
    checkpoint = "train.ckpt"

    def __init__(self, ctx):
        super().__init__(ctx)
        from_dense = ctx.res.recipe.from_dense
        # OTOv2 trains from scratch unless the recipe starts from the dense checkpoint or, for
        # the ImageNet row, from torchvision's pretrained weights
        self.start = "torchvision" if from_dense == "torchvision" else (
            "dense" if from_dense else "scratch")

    def prepare(self, model):
        ctx, recipe = self.ctx, self.ctx.res.recipe
        total, spe = ctx.total_steps, len(ctx.data.train)
        self.groups = ChannelGroups(model, example_input(model, ctx.size), consumers=False)
        self.sp = None
        if self.config["method"] != "host":  # releases allowed while projections still run
            self.sp = SmoothPruning(self.groups, None, recipe.decay_steps, "l2", rounds=(),
                                    rectifier=rectifier(self.config, total), input_size=ctx.size,
                                    release_until=total - 2 * recipe.decay_steps)
        dpm = {} if self.sp is None else dict(
            project_until=total - recipe.decay_steps, decay=self.sp,
            lasso_while_decaying=recipe.lasso_while_decaying, l_init_at=recipe.l_init_at,
            released=recipe.released, sr_signal=self.config["options"].get("sr_signal", "gradient"))
        self.factory = DHSPG.factory(self.groups, target_sparsity=recipe.target_sparsity,
                                     tolerance=recipe.tolerance, lmbda=recipe.lmbda,
                                     lmbda_amplify=recipe.lmbda_amplify,
                                     hat_lmbda_coeff=recipe.hat_lmbda_coeff,
                                     epsilon=recipe.epsilon, start_step=recipe.start_epoch * spe,
                                     seed=ctx.seed, **dpm)

    def hooks(self):
        return ([self.sp] if self.sp else []) + [SparsityLog(self.groups, self.sp)]

    def optimizer(self):
        def make_dhspg(model, cfg):
            self.dhspg = self.factory(model, cfg)
            return self.dhspg
        return make_dhspg

    def finalize(self, model, history):
        ctx, recipe = self.ctx, self.ctx.res.recipe
        zero = pruned_groups(self.dhspg)
        extra = {"group_sparsity": len(zero) / self.groups.num_structures,
                 "target_sparsity": recipe.target_sparsity,
                 "num_groups": self.groups.num_structures}
        if self.sp is not None:
            return finish_decay(self.sp, model, history, ctx, extra)
        channels = self.groups.split(zero)
        extra["effective_macs"], extra["effective_params"] = effective_macs_params(
            model, channels, ctx.size)
        extra["history_tp"] = remove_channels(model, channels, ctx.size)
        extra["soft_top1"] = history[-1]["test_acc"]
        extra["top1_after_finalize"] = evaluate(model, ctx.data.test, ctx.device)
        return model, extra
