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

import hashlib
import itertools
import json
from dataclasses import asdict, dataclass, fields, replace

from . import TRAINING_PATH_VERSION, __version__, distributed
from .config import Profile, get_profile
from .models import PRETRAINED

HOSTS = ("core", "depgraph", "otov2", "gatedecorator")
METHODS = {"core": ("single-step", "sp", "dpm", "iterative", "tpp", "tpp+dpm"), "depgraph": ("host", "sp", "dpm"),
           "otov2": ("host", "sp", "dpm"), "gatedecorator": ("host", "sp", "dpm")}
# Self-Rectifying defaults, chosen on the validation split (results/reference/self-rectifying,
# notebook 03): the scale-free C_rate, and the thresholds at which SR acts selectively.
SR_DEFAULTS = {"t_rate": 0.5, "t_len": 1.0, "rule": "all", "window": 10,
               "rate_reference": "gradient"}
OTOV2_DPM_OPTIONS = ("lasso_while_decaying", "l_init_at", "released")
# iterative pruning: Torch-Pruning's default scheduler (linear); k defaults to DPM's round count
CORE_DEFAULTS = {"target_macs": 0.5, "criterion": "l2", "prune_phase": 0.5,
                 "calibration_batches": 4, "prune_schedule": "linear"}
TPP_METHODS = ("tpp", "tpp+dpm")
# TPP x DPM: a released filter is not replaced (leave, TPP selects once), or the next smallest-L1
# free filter of its layer takes its place at the next round (replace), keeping the layer ratio
TPP_RELEASED = ("leave", "replace")
SR_METHODS = ("dpm", "tpp+dpm")          # the methods with Self-Rectifying
DECAY_METHODS = ("sp", "dpm", "tpp+dpm")  # the methods with Smooth Pruning


@dataclass(frozen=True)
class RunSpec:
    """One run as asked for. ``host``: ``core`` (DPM's own selection), ``depgraph``, ``otov2`` or
    ``gatedecorator``.
    ``method``: ``single-step``/``sp``/``dpm``/``iterative``/``tpp``/``tpp+dpm`` for core,
    ``host``/``sp``/``dpm`` for a host. ``layer_ratio``: TPP's layer-wise target (also single-step's, for TPP's L1
    baseline).
    Every other field left ``None`` takes the profile's or the recipe's value.

    ``epochs`` sets the pruning phase's training (fine-tuning; OTOv2's one DHSPG run), scaling
    multistep milestones with it; ``lr``, ``schedule``, ``nesterov``, ``label_smoothing`` and
    ``weight_decay`` override the same phase's recipe. ``val_fraction`` holds out that part of
    the training split. ``dense_epochs`` and ``dense_lr`` change the profile's dense recipe (its
    milestones scaled with the epochs), so that a recipe search is an experiment file like any
    other.
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
    """The options that do not apply to ``spec``'s host and method, each with the reason."""
    host, method = spec.host, spec.method
    why = {}
    decaying = method in DECAY_METHODS
    if method not in SR_METHODS:
        for o in SR_OPTIONS:
            why[o] = "Self-Rectifying options apply only to --method dpm and tpp+dpm"
    if host != "core" or method not in ("single-step",) + TPP_METHODS:
        why["layer_ratio"] = ("a layer-wise ratio is TPP's target: --method tpp, tpp+dpm, and "
                              "single-step (TPP's L1 baseline)")
    if method in TPP_METHODS:
        why["criterion"] = "TPP ranks the filters of each chosen layer by their L1 norm"
        why["calibration_batches"] = why["criterion"]
        for o in ("target_macs", "channel_ratio"):
            why[o] = "TPP prunes a ratio of every chosen layer: --layer-ratio"
        why["prune_phase"] = "TPP selects once, before regularising"
    if host != "core":
        ranks = {"depgraph": "DepGraph ranks channels by Torch-Pruning's group L2 magnitude",
                 "otov2": "OTOv2's DHSPG optimiser ranks groups itself",
                 "gatedecorator": "Gate Decorator ranks gates by their Taylor score"}[host]
        why["criterion"] = f"the {host} host chooses its channels itself ({ranks})"
        why["calibration_batches"] = why["criterion"]
        for o in ("target_macs", "channel_ratio"):
            why[o] = ("hosts take --speedup (depgraph), --target-sparsity (otov2) or "
                      "--target-macs (gatedecorator)")
        if host == "gatedecorator":
            del why["target_macs"]
    if host != "depgraph":
        why["speedup"] = "--speedup is the DepGraph host's target"
        why["sparse_learning"] = "sparse learning belongs to the DepGraph host"
    if host != "otov2":
        why["target_sparsity"] = "--target-sparsity is the OTOv2 host's target"
    if host != "otov2" or not decaying:
        for o in OTOV2_DPM_OPTIONS:
            why[o] = "a deviation of DHSPG for DPM: applies to --host otov2 --method sp or dpm"
    if host != "otov2" or method != "dpm":
        why["sr_signal"] = ("what Self-Rectifying reads inside DHSPG: applies to --host otov2 "
                            "--method dpm")
    if method == "tpp+dpm":
        del why["released"]
    if host != "gatedecorator" or not decaying:
        why["gate_decay"] = "what decays inside Gate Decorator: --host gatedecorator --method sp/dpm"
    if method not in SR_METHODS:
        why["released"] = ("what happens to released groups applies only to --method dpm "
                           "(otov2) and tpp+dpm")
    if method != "iterative":
        why["iterative_steps"] = "k removal rounds apply only to --method iterative"
        why["prune_schedule"] = "the schedule of removal rounds applies only to --method iterative"
    if not decaying and method != "iterative":  # iterative: the N and phase of DPM's rounds
        why["decay_steps"] = ("N applies only to --method sp and dpm (and tpp+dpm; iterative: "
                              "the N of the DPM rounds whose span it prunes in)")
        why["prune_phase"] = "selection rounds apply only to --method sp and dpm (and iterative)"
    if host == "otov2":
        why["prune_phase"] = ("OTOv2 has no selection rounds: groups start decaying when "
                              "DHSPG's projection fires")
    if host == "gatedecorator":
        why["prune_phase"] = "Gate Decorator selects after every tick until its MACs target"
    if host == "core" and method not in TPP_METHODS and (
            spec.criterion or CORE_DEFAULTS["criterion"]) != "taylor":
        why["calibration_batches"] = ("calibration batches compute the gradients of "
                                      "--criterion taylor only")
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
                                 ("val_fraction", spec.val_fraction)) if v is not None}
    profile = _dense(spec, profile.with_(**changes))
    resolve_host = {"core": _core, "depgraph": _depgraph, "otov2": _otov2,
                    "gatedecorator": _gatedecorator}[spec.host]
    profile, train, dense, options, recipe = resolve_host(spec, profile)
    if spec.method in SR_METHODS:
        options["self_rectifying"] = _self_rectifying(spec, profile, options["decay_steps"])
    config = {"version": __version__, "training_path": TRAINING_PATH_VERSION, "kind": "prune",
              "host": spec.host, "method": spec.method, "seed": spec.seed, "model": profile.model,
              "data": data_config(profile), "dense": dense, "train": asdict(train),
              "options": options}
    return Resolved(spec, profile, config, train, recipe)


def data_config(profile: Profile) -> dict:
    """The data part of a run's identity. ``batch_size`` is the global batch; under DDP each of
    ``world_size`` processes normalises its share in BatchNorm, which changes the numbers, so
    ``world_size`` joins the identity when above 1 (absent for one process, so single-process
    identities are those of before)."""
    config = {"dataset": profile.dataset, "n_train": profile.n_train, "n_test": profile.n_test,
              "val_fraction": profile.val_fraction, "val_seed": profile.val_seed,
              "batch_size": profile.batch_size}
    if distributed.world_size() > 1:
        config["world_size"] = distributed.world_size()
    return config


def dense_config(profile: Profile, seed: int) -> dict:
    """The identity of the dense checkpoint every method of a comparison starts from."""
    return {"version": __version__, "training_path": TRAINING_PATH_VERSION, "kind": "dense",
            "seed": seed, "model": profile.model, "data": data_config(profile),
            "train": asdict(profile.dense)}


RECIPE_FIELDS = ("lr", "schedule", "nesterov", "label_smoothing", "weight_decay")


def _epochs(train, spec: RunSpec):
    """The pruning phase's TrainConfig with the spec's recipe overrides (validated again)."""
    train = train if spec.epochs is None else train.with_epochs(spec.epochs)
    changes = {k: getattr(spec, k) for k in RECIPE_FIELDS if getattr(spec, k) is not None}
    return replace(train, **changes) if changes else train


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
    decays last a few steps, shorter than the default window; ``full``: its provisional window)."""
    p = profile if isinstance(profile, Profile) else get_profile(profile)
    return {**SR_DEFAULTS, **p.self_rectifying}


def _self_rectifying(spec: RunSpec, profile: Profile, decay_steps: int) -> dict:
    """The run's Self-Rectifying settings, refused where it could never release (window ≥ N,
    ``rectify.check_release_window``)."""
    from .pruning.rectify import RATE_REFERENCES, RULES, check_release_window

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


def _check_fraction(name: str, value, low_open=True) -> None:
    ok = (0 < value <= 1) if low_open else (0 <= value < 1)
    if not ok:
        raise ValueError(f"{name} must be in {'(0, 1]' if low_open else '[0, 1)'}, got {value!r}")


def _core(spec: RunSpec, profile: Profile):
    from .pruning.selection import CRITERIA

    if spec.method in TPP_METHODS:
        return _tpp(spec, profile)
    given = [f for f in ("target_macs", "channel_ratio", "layer_ratio") if getattr(spec, f) is not None]
    if len(given) > 1:
        raise ValueError("give only one of --target-macs, --channel-ratio and --layer-ratio, "
                         f"not both {' and '.join('--' + g.replace('_', '-') for g in given)}")
    if spec.layer_ratio is not None:  # TPP's L1 baseline: its layers, by filter L1, at once
        if spec.criterion is not None:
            raise ValueError(f"--criterion {spec.criterion!r} does not apply with --layer-ratio: "
                             "a layer-wise target ranks filters by their L1 norm, as TPP does")
        recipe = _tpp(spec, profile)[4]
        options = {"target": {"layer_ratio": recipe.layer_ratio, "layers": recipe.layers,
                              "exclude": recipe.exclude}, "criterion": "filter-l1"}
        return profile, _epochs(profile.finetune, spec), asdict(profile.dense), options, None
    if spec.channel_ratio is not None:
        if not 0 < spec.channel_ratio < 1:
            raise ValueError(f"channel ratio must be in (0, 1), got {spec.channel_ratio!r}")
        target = {"channel_ratio": spec.channel_ratio}
    else:
        macs = CORE_DEFAULTS["target_macs"] if spec.target_macs is None else spec.target_macs
        _check_fraction("target MACs", macs)
        target = {"macs": macs}
    criterion = spec.criterion or CORE_DEFAULTS["criterion"]
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}; choose one of: {', '.join(CRITERIA)}")
    options = {"target": target, "criterion": criterion}
    if criterion == "taylor":
        cb = spec.calibration_batches or CORE_DEFAULTS["calibration_batches"]
        if cb < 1:
            raise ValueError(f"calibration batches must be >= 1, got {cb!r}")
        options["calibration_batches"] = cb
    if spec.method != "single-step":
        options["decay_steps"] = _decay_steps(spec.decay_steps or profile.decay_steps)
        phase = CORE_DEFAULTS["prune_phase"] if spec.prune_phase is None else spec.prune_phase
        _check_fraction("prune phase", phase)
        options["prune_phase"] = phase
    if spec.method == "iterative":
        options.update(_iterative(spec))
    return profile, _epochs(profile.finetune, spec), asdict(profile.dense), options, None


def _iterative(spec: RunSpec) -> dict:
    """Iterative pruning's own options: k (``None``: as many rounds as DPM's at the run's N and
    prune phase, known once the steps per epoch are) and the schedule of the rounds."""
    from .pruning.iterative import SCHEDULES

    k = spec.iterative_steps
    if k is not None and (not isinstance(k, int) or isinstance(k, bool) or k < 1):
        raise ValueError(f"iterative steps (k) must be an integer >= 1, got {k!r}")
    schedule = spec.prune_schedule or CORE_DEFAULTS["prune_schedule"]
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown prune schedule {schedule!r}; choose one of: "
                         f"{', '.join(SCHEDULES)}")
    return {"iterative_steps": k, "prune_schedule": schedule}


def _tpp(spec: RunSpec, profile: Profile):
    from .hosts.recipes import tpp_recipe

    if spec.layer_ratio is not None and not 0 < spec.layer_ratio < 1:
        raise ValueError(f"layer ratio must be in (0, 1), got {spec.layer_ratio!r}")
    recipe = tpp_recipe(profile, profile.model, spec.layer_ratio)
    if spec.decay_steps is not None:
        recipe = replace(recipe, decay_steps=_decay_steps(spec.decay_steps))
    recipe = replace(recipe, finetune=_epochs(recipe.finetune, spec))
    options = recipe.to_dict()
    options.pop("finetune")
    options["target"] = {k: options.pop(k) for k in ("layer_ratio", "layers", "exclude")}
    if spec.method == "tpp":  # hard zeroing: no decay
        options.pop("decay_steps")
    if spec.released not in (None,) + TPP_RELEASED:
        raise ValueError(f"unknown released {spec.released!r} for --method tpp+dpm; choose one "
                         f"of: {', '.join(TPP_RELEASED)}")
    if spec.released == "replace":  # "leave", TPP's one selection, is the default: not recorded
        options["released"] = "replace"
    return profile, recipe.finetune, asdict(profile.dense), options, recipe


def _decay_steps(n) -> int:
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"decay steps (N) must be an integer >= 1, got {n!r}")
    return n


def _depgraph(spec: RunSpec, profile: Profile):
    from .hosts.recipes import depgraph_recipe

    sl = True if spec.sparse_learning is None else spec.sparse_learning
    recipe = depgraph_recipe(profile, sl, spec.model)
    if spec.speedup is not None:
        if spec.speedup <= 1:
            raise ValueError(f"speed-up must be > 1, got {spec.speedup!r}")
        recipe = replace(recipe, speedup=spec.speedup)
    if spec.decay_steps is not None:
        recipe = replace(recipe, decay_steps=_decay_steps(spec.decay_steps))
    if spec.prune_phase is not None:
        _check_fraction("prune phase", spec.prune_phase)
        recipe = replace(recipe, prune_phase=spec.prune_phase)
    # the host removes at once: N and rounds do not enter
    return _prune_then_finetune(spec, profile, recipe, ("decay_steps", "prune_phase"))


def _prune_then_finetune(spec: RunSpec, profile: Profile, recipe, not_for_host: tuple):
    """A host that prunes, then fine-tunes from the dense checkpoint: its resolved parts, the
    options in ``not_for_host`` left out of ``--method host``'s identity."""
    recipe = replace(recipe, finetune=_epochs(recipe.finetune, spec))
    profile = profile.with_(model=recipe.model)
    options = recipe.to_dict()
    options.pop("finetune")
    options.pop("model")
    if spec.method == "host":
        for o in not_for_host:
            options.pop(o)
    return profile, recipe.finetune, asdict(profile.dense), options, recipe


def _otov2(spec: RunSpec, profile: Profile):
    from .hosts.recipes import otov2_recipe

    default_model = None if profile.name == "paper" else profile.model
    recipe = otov2_recipe(profile, spec.model or default_model, spec.target_sparsity)
    if not 0 < recipe.target_sparsity < 1:
        raise ValueError(f"target sparsity must be in (0, 1), got {recipe.target_sparsity!r}")
    if spec.decay_steps is not None:  # also ends DHSPG's projections N steps before the end
        recipe = replace(recipe, decay_steps=_decay_steps(spec.decay_steps))
    recipe = replace(recipe, train=_epochs(recipe.train, spec),
                     **{k: getattr(spec, k) for k in OTOV2_DPM_OPTIONS
                        if getattr(spec, k) is not None})
    from .hosts.otov2 import L_INIT_AT, RELEASED_GROUPS, SR_SIGNALS
    if recipe.l_init_at not in L_INIT_AT:
        raise ValueError(f"unknown l_init_at {recipe.l_init_at!r}; choose one of: "
                         f"{', '.join(L_INIT_AT)}")
    if recipe.released not in RELEASED_GROUPS:
        raise ValueError(f"unknown released {recipe.released!r}; choose one of: "
                         f"{', '.join(RELEASED_GROUPS)}")
    profile = profile.with_(model=recipe.model, batch_size=recipe.batch_size or profile.batch_size)
    options = recipe.to_dict()
    options.pop("train")
    options.pop("model")
    if spec.method == "host":  # DHSPG alone: projections run to the end, no decay options
        for o in ("decay_steps",) + OTOV2_DPM_OPTIONS:
            options.pop(o)
    elif spec.method == "sp":
        options.pop("released")
    if spec.sr_signal not in (None,) + SR_SIGNALS:
        raise ValueError(f"unknown sr_signal {spec.sr_signal!r}; choose one of: "
                         f"{', '.join(SR_SIGNALS)}")
    if spec.sr_signal not in (None, SR_SIGNALS[0]):  # a deviation only, as TPP's released: the
        options["sr_signal"] = spec.sr_signal         # default named or not is one run, one id
    if recipe.from_dense is not True and (spec.dense_epochs, spec.dense_lr) != (None, None):
        start = "torchvision's pretrained weights" if recipe.from_dense else "scratch"
        raise ValueError(f"--dense-epochs and --dense-lr do not apply to --host otov2 with the "
                         f"{profile.name} recipe of {recipe.model}: it starts from {start}, not "
                         f"from a dense checkpoint")
    dense = ({"torchvision_weights": PRETRAINED[profile.model]} if recipe.from_dense == "torchvision"
             else asdict(profile.dense) if recipe.from_dense else None)
    return profile, recipe.train, dense, options, recipe


def _gatedecorator(spec: RunSpec, profile: Profile):
    from .hosts.gatedecorator import DECAY_SLICES
    from .hosts.recipes import gatedecorator_recipe

    recipe = gatedecorator_recipe(profile, spec.model)
    if spec.target_macs is not None:
        if not 0 < spec.target_macs < 1:
            raise ValueError(f"target MACs must be in (0, 1), got {spec.target_macs!r}")
        recipe = replace(recipe, target_macs=spec.target_macs)
    if spec.decay_steps is not None:
        recipe = replace(recipe, decay_steps=_decay_steps(spec.decay_steps))
    if recipe.decay_steps > recipe.finish_ticks * recipe.tick_batches:
        raise ValueError(f"decay steps (N) {recipe.decay_steps} must be <= the "
                         f"{recipe.finish_ticks * recipe.tick_batches} steps of the finishing "
                         "ticks, so that every decay ends before the gates melt")
    if spec.gate_decay is not None:
        if spec.gate_decay not in DECAY_SLICES:
            raise ValueError(f"unknown gate decay {spec.gate_decay!r}; choose one of: "
                             f"{', '.join(DECAY_SLICES)}")
        recipe = replace(recipe, decay=spec.gate_decay)
    # the host masks at once: N and what decays do not enter
    return _prune_then_finetune(spec, profile, recipe, ("decay_steps", "decay"))


def config_hash(config: dict) -> str:
    """12 hex digits of the sha256 of the canonical JSON of ``config``."""
    text = json.dumps(config, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def comparable_id(config: dict) -> str:
    """The hash of a configuration without its seed: runs with equal ``comparable_id`` differ
    only in the seed, and only such runs are pooled into one mean."""
    return config_hash({k: v for k, v in config.items() if k != "seed"})


def canonical(config: dict) -> dict:
    """``config`` as it reads back from JSON (tuples become lists), for equality checks."""
    return json.loads(json.dumps(config, default=str))


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
            # the dense recipe a pruning run starts from (a dense record's own is epochs and lr)
            "dense_epochs": dense.get("epochs"), "dense_lr": dense.get("lr"),
            **{k: sr.get(k) for k in SR_DEFAULTS},
            **{k: o.get(k) for k in ("lasso_while_decaying", "l_init_at")},
            "on_release": o.get("released"),  # OTOv2's --released (a count is "released")
            "sr_signal": o.get("sr_signal"),  # OTOv2's --sr-signal, where not the raw gradient
            "gate_decay": o.get("decay"),
            "prune_schedule": o.get("prune_schedule"), "k": o.get("iterative_steps")}
