"""A run's identity: what a user asks for (:class:`RunSpec`), resolved into the complete
configuration the run will use, and the hash of that configuration.

Why: a result is only reusable, comparable or reportable if everything that shaped it is known.
:func:`resolve` turns a spec into a plain dict holding every value the pipeline reads: the
package version, the training-path version (``dpm_lab.TRAINING_PATH_VERSION``), data split,
model, the dense recipe the run starts from, the pruning-phase recipe, and every method and host
option with its default filled in. Two runs are the same run exactly when these dicts are equal;
records and checkpoints are named by their hash, so a run with any option changed (a threshold,
the window, the epochs, the recipe, the package or training-path version) starts afresh instead
of returning an old result.

Options that do not apply to a method or host are refused with a message saying why (for
example ``criterion`` with the OTOv2 host, whose DHSPG optimiser ranks groups itself), never
silently ignored. ``None`` in a spec means "the profile's or recipe's value".
"""
from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, fields, replace

from .. import TRAINING_PATH_VERSION, __version__
from ..hosts import HOSTS, METHODS, REGISTRY, entry
from ..pruning.rectify import RATE_REFERENCES, RULES, check_release_window
from .identity import config_hash, data_config, precision_config
from .method import DECAY_METHODS, SR_METHODS
from .profiles import Profile, get_profile

# Self-Rectifying defaults, chosen on the validation split (results/reference/self-rectifying,
# notebook 03): the scale-free C_rate, and the thresholds at which SR acts selectively.
SR_DEFAULTS = {"t_rate": 0.5, "t_len": 1.0, "rule": "all", "window": 10,
               "rate_reference": "gradient"}


@dataclass(frozen=True)
class RunSpec:
    """One run as asked for. ``host``: ``core`` (DPM's own selection), ``depgraph``, ``otov2`` or
    ``gatedecorator``.
    ``method``: ``single-step``/``sp``/``dpm``/``iterative``/``tpp``/``tpp+dpm`` for core,
    ``host``/``sp``/``dpm`` for a host. ``layer_ratio``: TPP's layer-wise target (also
    single-step's, for TPP's L1 baseline).
    Every other field left ``None`` takes the profile's or the recipe's value.

    ``epochs`` sets the pruning phase's training (fine-tuning; OTOv2's one DHSPG run), scaling
    multistep milestones with it; ``lr``, ``schedule``, ``nesterov``, ``label_smoothing`` and
    ``weight_decay`` override the same phase's recipe. ``val_fraction`` holds out that part of
    the training split. ``dense_epochs`` and ``dense_lr`` change the profile's dense recipe (its
    milestones scaled with the epochs), so that a recipe search is an experiment file like any
    other. ``precision`` (``fp32`` or ``bf16``) sets the arithmetic of every phase of the run,
    the dense run it starts from included (a bf16 run starts from a bf16 dense model).
    """

    host: str = "core"
    method: str = "dpm"
    profile: str | Profile | None = None
    seed: int = 0
    model: str | None = None
    dataset: str | None = None
    epochs: int | None = None
    lr: float | None = None
    schedule: str | None = None
    nesterov: bool | None = None
    label_smoothing: float | None = None
    weight_decay: float | None = None
    val_fraction: float | None = None
    # the dense run the pruning starts from (a recipe search's candidates); another value is
    # another dense checkpoint, trained once and shared like the profile's
    dense_epochs: int | None = None
    dense_lr: float | None = None
    # the arithmetic of every phase, the dense one included: "fp32" or "bf16" (autocast)
    precision: str | None = None
    # core selection
    target_macs: float | None = None
    channel_ratio: float | None = None
    layer_ratio: float | None = None
    criterion: str | None = None
    calibration_batches: int | None = None
    prune_phase: float | None = None
    # Smooth Pruning
    decay_steps: int | None = None
    # Self-Rectifying
    t_rate: float | None = None
    t_len: float | None = None
    rule: str | None = None
    window: int | None = None
    rate_reference: str | None = None
    # hosts
    sparse_learning: bool | None = None
    speedup: float | None = None
    target_sparsity: float | None = None
    # OTOv2 + DPM: deviations from DHSPG, off (OTOv2's behaviour) by default
    lasso_while_decaying: bool | None = None
    l_init_at: str | None = None
    released: str | None = None
    # OTOv2 + DPM: what Self-Rectifying reads, the raw gradient (default) or DHSPG's update
    sr_signal: str | None = None
    # Gate Decorator + DPM: what decays ("gate" or "gate+filter")
    gate_decay: str | None = None
    # iterative pruning: k removal rounds (None: as many as DPM's) and their schedule (not the
    # learning-rate ``schedule``)
    iterative_steps: int | None = None
    prune_schedule: str | None = None

    def replace(self, **changes) -> "RunSpec":
        return replace(self, **changes)


FIELDS = tuple(f.name for f in fields(RunSpec))
SR_OPTIONS = tuple(SR_DEFAULTS)


def inapplicable(spec: RunSpec) -> dict[str, str]:
    """The options that do not apply to ``spec``'s host and method, each with the reason: the
    method-level rules below (Self-Rectifying's and Smooth Pruning's options), then each host
    folder's own (``refusals`` of its registry entry: its options outside it, and the options it
    has no use for inside it), which may give a more specific reason for the same option."""
    method, why = spec.method, {}
    if method not in SR_METHODS:
        for o in SR_OPTIONS:
            why[o] = "Self-Rectifying options apply only to --method dpm and tpp+dpm"
        why["released"] = ("what happens to released groups applies only to --method dpm "
                           "(otov2) and tpp+dpm")
    if method not in DECAY_METHODS and method != "iterative":  # iterative: DPM's N and phase
        why["decay_steps"] = ("N applies only to --method sp and dpm (and tpp+dpm; iterative: "
                              "the N of the DPM rounds whose span it prunes in)")
        why["prune_phase"] = "selection rounds apply only to --method sp and dpm (and iterative)"
    for e in REGISTRY.values():
        why.update(e.refusals(spec))
    return why


@dataclass(frozen=True)
class Resolved:
    """A resolved run: ``config`` is its identity; ``profile``, ``train`` (the pruning phase's
    TrainConfig) and ``recipe`` (a host's recipe, else ``None``) are the objects it was derived
    from, which the pipeline runs."""

    spec: RunSpec
    profile: Profile
    config: dict
    train: object
    recipe: object = None

    @property
    def run_id(self) -> str:
        return config_hash(self.config)


def resolve(spec: RunSpec) -> Resolved:
    """The complete configuration of ``spec`` (a plain JSON-able dict) and what it came from.

    Raises ``ValueError`` naming the bad value and what is allowed, or the option that does not
    apply and why.
    """
    if spec.host not in HOSTS:
        raise ValueError(f"unknown host {spec.host!r}; choose one of: {', '.join(HOSTS)}")
    if spec.method not in METHODS[spec.host]:
        raise ValueError(f"method {spec.method!r} is not a {spec.host} method; choose one of: "
                         f"{', '.join(METHODS[spec.host])}")
    if not isinstance(spec.seed, int) or isinstance(spec.seed, bool):
        raise ValueError(f"seed must be an integer, got {spec.seed!r}")
    refused = inapplicable(spec)
    for name in FIELDS:
        if name in refused and getattr(spec, name) is not None:
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"{flag} {getattr(spec, name)!r} does not apply to --host "
                             f"{spec.host} --method {spec.method}: {refused[name]}")
    profile = spec.profile if isinstance(spec.profile, Profile) else get_profile(spec.profile)
    changes = {k: v for k, v in (("model", spec.model), ("dataset", spec.dataset),
                                 ("val_fraction", spec.val_fraction),
                                 ("precision", spec.precision)) if v is not None}
    profile = _dense(spec, profile.with_(**changes))
    profile, train, dense, options, recipe = entry(spec.host, spec.method).resolve(spec, profile)
    if spec.method in SR_METHODS:
        options["self_rectifying"] = _self_rectifying(spec, profile, options["decay_steps"])
    config = {"version": __version__, "training_path": TRAINING_PATH_VERSION, "kind": "prune",
              "host": spec.host, "method": spec.method, "seed": spec.seed, "model": profile.model,
              "data": data_config(profile), "dense": dense, "train": asdict(train),
              "options": options, **precision_config(profile)}
    return Resolved(spec, profile, config, train, recipe)


def _dense(spec: RunSpec, profile: Profile) -> Profile:
    """``profile`` with the spec's dense recipe overrides (validated again): the dense checkpoint
    the run starts from is then the one of that recipe (``dense_config``), shared by every run
    that asks for the same."""
    if spec.dense_epochs is None and spec.dense_lr is None:
        return profile
    dense = profile.dense if spec.dense_epochs is None else \
        profile.dense.with_epochs(spec.dense_epochs)
    return profile.with_(dense=dense if spec.dense_lr is None else replace(dense, lr=spec.dense_lr))


def sr_defaults(profile: Profile | str | None = None) -> dict:
    """The Self-Rectifying settings a run of ``profile`` gets where the spec leaves them out:
    ``SR_DEFAULTS`` with the profile's own ``self_rectifying`` values over them (``smoke``: its
    decays last a few steps, shorter than the default window; ``full``: the window it chose)."""
    p = profile if isinstance(profile, Profile) else get_profile(profile)
    return {**SR_DEFAULTS, **p.self_rectifying}


def _self_rectifying(spec: RunSpec, profile: Profile, decay_steps: int) -> dict:
    """The run's Self-Rectifying settings, refused where it could never release (window ≥ N,
    ``rectify.check_release_window``)."""
    defaults = sr_defaults(profile)
    sr = {k: defaults[k] if getattr(spec, k) is None else getattr(spec, k) for k in SR_DEFAULTS}
    if sr["rule"] not in RULES:
        raise ValueError(f"unknown release rule {sr['rule']!r}; choose one of: {', '.join(RULES)}")
    if sr["rate_reference"] not in RATE_REFERENCES:
        raise ValueError(f"unknown rate reference {sr['rate_reference']!r}; choose one of: "
                         f"{', '.join(RATE_REFERENCES)}")
    if not isinstance(sr["window"], int) or sr["window"] < 1:
        raise ValueError(f"window must be an integer >= 1, got {sr['window']!r}")
    try:
        check_release_window(decay_steps, sr["window"])
    except ValueError as err:
        raise ValueError(f"--window {sr['window']} with --decay-steps {decay_steps}: {err}") from None
    return sr


def grid(base: RunSpec | None = None, **axes) -> list[RunSpec]:
    """The Cartesian product of ``axes`` (``field=[values]``) over ``base``, seeds varying
    fastest-last, e.g. ``grid(RunSpec(method="dpm"), t_rate=[0.1, 0.5], seed=[0, 1, 2])``."""
    base = base or RunSpec()
    for name in axes:
        if name not in FIELDS:
            raise ValueError(f"unknown run field {name!r}; choose from: {', '.join(FIELDS)}")
    names = list(axes)
    return [base.replace(**dict(zip(names, values)))
            for values in itertools.product(*(list(axes[n]) for n in names))]


def describe(config: dict) -> dict:
    """The knobs of a configuration as flat, readable columns (for tables and legends)."""
    o = config.get("options", {})
    target = o.get("target", {})
    if "macs" in target:
        tgt = f"MACs {target['macs']}"
    elif "channel_ratio" in target:
        tgt = f"ratio {target['channel_ratio']}"
    elif "layer_ratio" in target:
        tgt = f"layers {target['layer_ratio']}"
    elif "speedup" in o:
        tgt = f"{o['speedup']}x" + ("" if o.get("sparse_learning") else " w/o SL")
    elif "target_sparsity" in o:
        tgt = f"GS {o['target_sparsity']}"
    elif "target_macs" in o:  # Gate Decorator
        tgt = f"MACs {o['target_macs']}"
    else:
        tgt = "-"
    sr = o.get("self_rectifying") or {}
    host = config.get("host", "-")
    train = config["train"]
    dense = config.get("dense") or {}  # None: OTOv2 from scratch
    # TPP selects by filter L1 (as its L1 baseline, ``single-step --layer-ratio``, does), and its
    # regularisation epochs count in its budget: comparisons pair runs at equal total epochs
    regularise = o.get("regularise", {}).get("epochs", 0)
    return {"host": host, "method": config.get("method", config.get("kind")),
            "model": config["model"], "dataset": config["data"]["dataset"], "target": tgt,
            "criterion": o.get("criterion", "filter-l1" if regularise else host),
            "N": o.get("decay_steps"), "epochs": train["epochs"] + regularise, "schedule": train.get("schedule"), "lr": train.get("lr"),
            "nesterov": train.get("nesterov"), "label_smoothing": train.get("label_smoothing"),
            "val_fraction": config["data"]["val_fraction"],
            "precision": config.get("precision"),  # where not fp32
            # the dense recipe a pruning run starts from (a dense record's own is epochs and lr)
            "dense_epochs": dense.get("epochs"), "dense_lr": dense.get("lr"),
            **{k: sr.get(k) for k in SR_DEFAULTS},
            **{k: o.get(k) for k in ("lasso_while_decaying", "l_init_at")},
            "on_release": o.get("released"),  # OTOv2's --released (a count is "released")
            "sr_signal": o.get("sr_signal"),  # OTOv2's --sr-signal, where not the raw gradient
            "gate_decay": o.get("decay"),
            "prune_schedule": o.get("prune_schedule"), "k": o.get("iterative_steps")}
