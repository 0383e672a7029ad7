"""Single-step pruning (core): select by a criterion from the dense model, remove at once with
Torch-Pruning, fine-tune. The baseline that Smooth Pruning with N = 1 reproduces."""
from __future__ import annotations

from ...experiments.method import Method
from ...pruning import ChannelGroups, accumulate_gradients, remove_channels, single_step_prune
from ...training.metrics import example_input
from ..tpp.algorithm import layerwise_selection


def core_target(options: dict):
    """The core methods' target: a MACs ratio or a per-group channel ratio."""
    from ...pruning import ChannelRatio, MacsTarget

    t = options["target"]
    return MacsTarget(t["macs"]) if "macs" in t else ChannelRatio(t["channel_ratio"])


def core_groups(model, ctx):
    """The model's channel groups; with a gradient criterion, the gradients of the step-0
    selection are accumulated first."""
    groups = ChannelGroups(model, example_input(model, ctx.size))
    options = ctx.res.config["options"]
    if "calibration_batches" in options:
        accumulate_gradients(model, ctx.data.train, options["calibration_batches"], ctx.device)
    return groups


class SingleStep(Method):
    def prepare(self, model):
        o, size = self.config["options"], self.ctx.size
        groups = core_groups(model, self.ctx)
        if "layer_ratio" in o["target"]:  # TPP's L1 baseline: its layers, by filter L1
            t = o["target"]
            ids = layerwise_selection(groups, t["layer_ratio"], t["layers"], t["exclude"])
            self.history_tp = remove_channels(model, groups.split(ids), size)
        else:
            _, self.history_tp, ids = single_step_prune(model, core_target(o), o["criterion"],
                                                        size, groups)
        self.selected = len(ids)

    def finalize(self, model, history):
        return model, {"selected": self.selected, "history_tp": self.history_tp}
