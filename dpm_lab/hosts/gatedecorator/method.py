"""Gate Decorator as a method: BN folded into gates, Tick-Tock until the MACs target (the host
masks each tick's pick; ``sp``/``dpm`` decay the picked gates over N steps instead, with
Self-Rectifying for ``dpm``), then the gates melt back into BN, the held channels are removed and
the smaller network is fine-tuned, the same for all three
(:mod:`dpm_lab.hosts.gatedecorator.algorithm`)."""
from __future__ import annotations

from ...experiments.method import Method, rectifier
from ...pruning import ChannelGroups, remove_channels
from ...training.engine import evaluate
from ...training.metrics import example_input
from .algorithm import TickTock, fold_gates, gate_smooth_pruning, melt_gates


class GateDecorator(Method):
    def prepare(self, model):
        ctx, recipe = self.ctx, self.ctx.res.recipe
        fold_gates(model).to(ctx.device)
        groups = ChannelGroups(model, example_input(model, ctx.size))
        sp = None
        if self.config["method"] != "host":  # SR's signals recorded at ~1000 steps of a phase
            sp = gate_smooth_pruning(groups, recipe.decay_steps, recipe.decay,
                                     rectifier(self.config, 1000), ctx.size)
        ticktock = TickTock(model, groups, recipe, ctx.data.train, ctx.data.test, ctx.size,
                            ctx.device, ctx.seed, sp, checkpoint=ctx.run_dir / "ticktock.ckpt",
                            progress=ctx.progress, precision=ctx.precision)
        self.extra = {"ticktock": ticktock.run()}
        held = ticktock.held().nonzero().flatten()
        self.extra["selected"] = len(held)
        if sp is not None:
            still = sp.decaying_ids()
            if len(still):  # TickTock's finishing ticks outlast N: this would be a bug
                raise RuntimeError(f"{len(still)} gates still decaying after Tick-Tock")
            self.extra.update(decay=sp.schedule(), releases=sp.release_log,
                              released=len(sp.released_ids()),
                              sr_signals=sp.rectifier.signal_summary(sp.status)
                              if sp.rectifier else {})
        self.extra["top1_gated"] = evaluate(model, ctx.data.test, ctx.device)
        melt_gates(model)
        self.extra["history_tp"] = remove_channels(model, groups.split(held), ctx.size)
        self.extra["top1_after_pruning"] = evaluate(model, ctx.data.test, ctx.device)

    def finalize(self, model, history):
        return model, self.extra
