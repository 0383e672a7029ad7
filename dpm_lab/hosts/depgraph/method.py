"""DepGraph (Torch-Pruning's ``group_sl``) as a method: sparse learning from the dense checkpoint
(cached, shared by host, +SP and +DPM), then either Torch-Pruning's progressive pruning at once
(``host``) or its selections handed to Smooth Pruning over fine-tuning (``sp``, ``dpm``)."""
from __future__ import annotations

import json
from dataclasses import asdict

from ... import __version__
from ...experiments.identity import config_hash, dense_config
from ...experiments.method import Method, finish_decay, rectifier, selection_rounds
from ...pruning import ChannelGroups, SmoothPruning
from ...training.checkpoint import load_checkpoint, save_checkpoint
from ...training.claims import shared_phase
from ...training.engine import evaluate, fit
from ...training.metrics import example_input
from .algorithm import ProgressiveSelector, SparseLearning, make_pruner, progressive_prune


class DepGraph(Method):
    def prepare(self, model):
        ctx, recipe = self.ctx, self.ctx.res.recipe
        self.extra = {}
        if recipe.sparse_learning is not None:
            self.extra["sl_history"] = self._sparse_learning(model)
        model.to(ctx.device)
        self.pruner = make_pruner(model, ctx.size, recipe.reg, recipe.normalizer,
                                  recipe.iterative_steps)
        self.sp = None
        if self.config["method"] == "host":
            self.extra["host_pruning"] = progressive_prune(self.pruner, model, recipe.speedup,
                                                           ctx.size)
            self.extra["top1_after_pruning"] = evaluate(model, ctx.data.test, ctx.device)
            return
        rounds = selection_rounds(ctx.total_steps, recipe.decay_steps, recipe.prune_phase)
        groups = ChannelGroups(model, example_input(model, ctx.size))
        self.selector = ProgressiveSelector(self.pruner, groups, recipe.speedup, len(rounds),
                                            ctx.size)
        self.sp = SmoothPruning(groups, None, recipe.decay_steps, "l2", rounds,
                                rectifier(self.config, ctx.total_steps), ctx.size,
                                selector=self.selector)

    def hooks(self):
        return [self.sp] if self.sp else []

    def finalize(self, model, history):
        if self.sp is None:
            self.extra["history_tp"] = self.pruner.DG.pruning_history()
            return model, self.extra
        self.extra["host_rounds"] = self.selector.log
        return finish_decay(self.sp, model, history, self.ctx, self.extra)

    def _sparse_learning(self, model) -> list[dict]:
        """Torch-Pruning's sparse learning from the dense checkpoint; one run per (dense
        checkpoint, SL recipe), shared by host, +SP and +DPM. Returns its history."""
        ctx, recipe, profile = self.ctx, self.ctx.res.recipe, self.ctx.res.profile
        config = {"version": __version__, "kind": "sparse-learning",
                  "dense": dense_config(profile, ctx.seed),
                  "train": asdict(recipe.sparse_learning), "reg": recipe.reg,
                  "normalizer": recipe.normalizer, "iterative_steps": recipe.iterative_steps}
        sl_run = (ctx.runs_dir / profile.name / "depgraph"
                  / f"sl_{profile.model}_s{ctx.seed}_{config_hash(config)}")
        with shared_phase(sl_run / "model.pt"):  # one process trains it, the others reuse it
            if (sl_run / "model.pt").exists():
                model.load_state_dict(load_checkpoint(sl_run / "model.pt"))
                return json.loads((sl_run / "history.json").read_text())
            return self._train_sparse(model, sl_run)

    def _train_sparse(self, model, sl_run) -> list[dict]:
        ctx, recipe = self.ctx, self.ctx.res.recipe
        pruner = make_pruner(model, ctx.size, recipe.reg, recipe.normalizer,
                             recipe.iterative_steps)
        history = fit(model, ctx.data.train, ctx.data.test, recipe.sparse_learning,
                      [SparseLearning(pruner)], checkpoint=sl_run / "train.ckpt", resume=True,
                      device=ctx.device, seed=ctx.seed, progress=ctx.progress,
                      desc="sparse learning", val_loader=ctx.data.val,
                      precision=ctx.precision)
        (sl_run / "history.json").write_text(json.dumps(history))
        save_checkpoint(model.state_dict(), sl_run / "model.pt")
        return history
