"""Self-Rectifying: a configuration in which it could never release is refused (in the API and in
run resolution), every profile and experiment file lets it act, a smoke DPM run releases; and the
release rule (bias-corrected moving averages of C_rate and C_len, the window gate, rule "all" and
"any", finite thresholds, what happens to a released structure) agrees, step by step, with a
plain-Python reference on a tiny float64 conv net."""
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from dpm_lab.experiments.identity import data_config
from dpm_lab.experiments.method import selection_rounds
from dpm_lab.experiments.method import SR_METHODS
from dpm_lab.experiments.profiles import PROFILE_NAMES, get_profile
from dpm_lab.experiments.runspec import SR_DEFAULTS, RunSpec, resolve, sr_defaults
from dpm_lab.hosts import HOSTS, METHODS
from dpm_lab.hosts.core.options import CORE_DEFAULTS
from dpm_lab.pruning import (DECAYING, FREE, PRUNED, RELEASED, ChannelGroups, ChannelRatio,
                             SelfRectifying, SmoothPruning, rectify, scores)

from conftest import needs_whole_cifar10

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
# the full profile names the whole-CIFAR-10 data it finds when it is built
PROFILE_PARAMS = [pytest.param(p, marks=needs_whole_cifar10 if p == "full" else ())
                  for p in PROFILE_NAMES]
FILE_PARAMS = [pytest.param(p, marks=needs_whole_cifar10 if p.parent.name == "full" else ())
               for p in sorted(CONFIGS.rglob("*.toml"))]
# (host, method) runs a profile's recipes do not cover: refused by name (hosts/<host>/recipe.py)
NO_RECIPE = {"full": {("core", "tpp+dpm"), ("otov2", "dpm"), ("gatedecorator", "dpm")}}

SIZE = (1, 3, 6, 6)
LAYERS = {"conv1": ("conv1", "bn1", "conv2"), "conv2": ("conv2", "bn2", "fc")}
CODE = {FREE: "free", DECAYING: "decaying", PRUNED: "pruned", RELEASED: "released"}


class Tiny(nn.Module):
    """Two conv-BN-ReLU layers of 8 channels and a classifier: two groups of 8 structures."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean((2, 3)))


# ---- a window that N cannot fill is refused; every shipped configuration lets SR act ----


def _tiny_groups():
    torch.manual_seed(0)
    model = Tiny().double()
    return model, ChannelGroups(model, torch.randn(SIZE, dtype=torch.float64))


@pytest.mark.parametrize("N, window", [(4, 4), (4, 9), (2, 10)])
def test_a_window_not_shorter_than_N_is_refused_naming_both(N, window):
    """A structure is observed N − 1 times while it decays; a release needs ``window`` of them."""
    _, groups = _tiny_groups()
    with pytest.raises(ValueError, match=rf"N = {N}.*window = {window}"):
        SmoothPruning(groups, ChannelRatio(0.5), N, rounds=[0, 20], input_size=SIZE,
                      rectifier=SelfRectifying(window=window))


def test_a_window_that_fits_and_N_1_are_accepted():
    _, groups = _tiny_groups()
    SmoothPruning(groups, ChannelRatio(0.5), 4, rounds=[0, 20], input_size=SIZE,
                  rectifier=SelfRectifying(window=3))
    # N = 1: nothing decays across a step (single-step pruning at each round), SR is vacuous
    SmoothPruning(groups, ChannelRatio(0.5), 1, rounds=[0, 20], input_size=SIZE,
                  rectifier=SelfRectifying(window=10))


def test_a_window_that_ends_after_release_until_is_refused():
    """A host's requested decays begin at step 1 at the earliest: with window 3 the first release
    could come at step 4, so release_until = 4 leaves none."""
    _, groups = _tiny_groups()
    with pytest.raises(ValueError, match=r"window = 3.*step 4.*before step 4"):
        SmoothPruning(groups, None, 10, rounds=(), release_until=4, input_size=SIZE,
                      rectifier=SelfRectifying(window=3))
    SmoothPruning(groups, None, 10, rounds=(), release_until=5, input_size=SIZE,
                  rectifier=SelfRectifying(window=3))


def test_a_window_that_ends_after_release_until_counts_from_the_first_round():
    """Without round 0 the earliest decay begins at the first round: rounds 5 and 10 with window
    6 could release at step 11 at the earliest, after the last round (release_until 10)."""
    _, groups = _tiny_groups()
    with pytest.raises(ValueError, match=r"step 5 .*window = 6.*step 11.*before step 10"):
        SmoothPruning(groups, ChannelRatio(0.5), 10, rounds=[5, 10], input_size=SIZE,
                      rectifier=SelfRectifying(window=6))
    SmoothPruning(groups, ChannelRatio(0.5), 10, rounds=[5, 10], input_size=SIZE,
                  rectifier=SelfRectifying(window=4))


@pytest.mark.parametrize("host, method", [(h, m) for h in HOSTS for m in METHODS[h]
                                          if m in SR_METHODS])
def test_resolution_refuses_a_window_not_shorter_than_N(host, method):
    with pytest.raises(ValueError, match=r"--window 12 with --decay-steps 12.*N = 12.*window = 12"):
        resolve(RunSpec(host=host, method=method, profile="mini", decay_steps=12, window=12))
    resolve(RunSpec(host=host, method=method, profile="mini", decay_steps=12, window=11))


def _steps_per_epoch(profile) -> int:
    """Training batches per epoch of ``profile``'s run (its training split, after the validation
    hold-out), from the data itself: what ``Context.total_steps`` multiplies by the epochs. A
    standard dataset that is not here, used whole, counts its published training-split size
    (the training loaders drop the last partial batch)."""
    from dpm_lab.training.data import DatasetNotFoundError
    from dpm_lab.experiments.runner import loaders

    key = json.dumps(data_config(profile), sort_keys=True)
    if key not in _STEPS:
        try:
            _STEPS[key] = len(loaders(profile, seed=0, device="cpu").train)
        except DatasetNotFoundError as err:
            if profile.dataset not in STANDARD_TRAIN or profile.val_fraction:
                pytest.skip(f"the timing check needs the run's data: {err}")
            n = min(STANDARD_TRAIN[profile.dataset], profile.n_train or math.inf)
            _STEPS[key] = n // profile.batch_size
    return _STEPS[key]


_STEPS: dict[str, int] = {}
STANDARD_TRAIN = {"cifar10": 50_000, "cifar100": 50_000, "imagenet": 1_281_167}


def _decay_timing(res, total_steps):
    """``(rounds, release_until)`` of the run's SmoothPruning, as its method builds it."""
    o, host, method = res.config["options"], res.config["host"], res.config["method"]
    N = o["decay_steps"]
    if method == "tpp+dpm":
        if o.get("released") == "replace":
            return selection_rounds(total_steps, N, CORE_DEFAULTS["prune_phase"]), None
        return [0], N
    if host in ("core", "depgraph"):
        return selection_rounds(total_steps, N, o["prune_phase"]), None
    if host == "otov2":
        return (), total_steps - 2 * N
    # Gate Decorator closes the release window when Tick-Tock reaches its target, which only the
    # run knows: ahead of it, only window < N can be checked
    return (), 2 ** 62


def _check_sr_can_act(res) -> None:
    """Build the run's SmoothPruning timing (its rounds and release_until over the run's optimiser
    steps) with its Self-Rectifying: the constructor raises where no release could ever come
    (window >= N, or the first possible release not before release_until)."""
    o = res.config["options"]
    total = res.train.epochs * _steps_per_epoch(res.profile)
    rounds, until = _decay_timing(res, total)
    _, groups = _tiny_groups()
    try:
        SmoothPruning(groups, None, o["decay_steps"], rounds=rounds, input_size=SIZE,
                      rectifier=SelfRectifying(**o["self_rectifying"]),
                      selector=lambda pruner, step: [], release_until=until)
    except ValueError as err:
        raise AssertionError(f"{res.spec}: {err}") from None


@pytest.mark.parametrize("profile", PROFILE_PARAMS)
def test_every_profile_lets_self_rectifying_act(profile):
    """Every host's DPM with the profile's own N and SR defaults can release (N = 1 excepted:
    nothing decays across a step, DPM is SP there by definition); a host without a recipe for
    the profile refuses it, naming the profiles it has recipes for."""
    for host in HOSTS:
        for method in (m for m in METHODS[host] if m in SR_METHODS):
            spec = RunSpec(host=host, method=method, profile=profile)
            if (host, method) in NO_RECIPE.get(profile, ()):
                with pytest.raises(ValueError, match=rf"has no recipe for profile '{profile}'; "
                                                     r"its recipes are for the profiles: smoke, "
                                                     r"mini, paper$"):
                    resolve(spec)
                continue
            _check_sr_can_act(resolve(spec))


def test_a_profile_refuses_an_unknown_self_rectifying_option_naming_the_allowed_ones():
    """A typo in a profile's Self-Rectifying settings would otherwise do nothing, silently."""
    assert tuple(SR_DEFAULTS) == rectify.OPTIONS  # one list: what a profile may set has a default
    smoke = get_profile("smoke")
    with pytest.raises(ValueError, match=r"unknown Self-Rectifying option\(s\) 'windw' in "
                                         r"self_rectifying; choose from: t_rate, t_len, rule, "
                                         r"window, rate_reference"):
        smoke.with_(self_rectifying={"windw": 2})
    assert smoke.with_(self_rectifying={"window": 3, "t_len": 2.0}).self_rectifying["window"] == 3


def test_the_window_help_gives_each_profiles_default(monkeypatch):
    from dpm_lab.experiments.cli import RUN_OPTIONS

    # full's window does not depend on which whole-CIFAR-10 copy is found, or whether one is
    monkeypatch.setattr("dpm_lab.training.data.whole_cifar10", lambda root=None: "cifar10-jpeg")

    text = next(kw["help"] for _, dest, kw in RUN_OPTIONS if dest == "window")
    windows = {p: sr_defaults(p)["window"] for p in PROFILE_NAMES}
    assert windows == {"smoke": 2, "mini": 10, "full": 10, "paper": 10}
    assert text.endswith("(default per profile: 10; smoke 2)")


@pytest.mark.parametrize("path", FILE_PARAMS, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_experiment_file_lets_self_rectifying_act(path):
    from dpm_lab.experiments.cli import _sweep_specs
    from dpm_lab.experiments.experiment_file import load_experiment

    for spec in _sweep_specs(load_experiment(path), sweep=True):
        if spec.method in SR_METHODS:
            _check_sr_can_act(resolve(spec))


@pytest.mark.parametrize("host, epochs, window, timing, why", [
    ("core", 1, 2, ([0], None), r"only before step 0"),
    ("otov2", 3, 3, ((), 4), r"beginning at step 1 .*window = 3.*step 4.*before step 4")],
    ids=["core-one-round", "otov2-window-past-release-until"])
def test_the_timing_check_refuses_runs_where_no_release_could_come(host, epochs, window, timing,
                                                                   why):
    """Window < N is not enough: on smoke (4 steps per epoch, N = 4) one epoch leaves the core a
    single round (nothing to release before), and OTOv2's releases end 2N steps before the end."""
    res = resolve(RunSpec(host=host, method="dpm", epochs=epochs, window=window,
                          profile=get_profile("smoke").with_(dataset="synthetic")))
    assert res.config["options"]["decay_steps"] == 4 and _steps_per_epoch(res.profile) == 4
    assert _decay_timing(res, 4 * epochs) == timing
    with pytest.raises(AssertionError, match=why):
        _check_sr_can_act(res)


def test_a_smoke_dpm_run_releases_and_replaces(tmp_path):
    """The smoke profile exists to exercise code paths: with the settings it resolves to, a DPM
    run must reach Self-Rectifying's releases and the later round's replacements."""
    from dpm_lab.experiments.runner import run

    profile = get_profile("smoke").with_(dataset="synthetic")
    record = run(RunSpec(method="dpm", profile=profile), results_dir=tmp_path / "res",
                 runs_dir=tmp_path / "runs", device="cpu", progress=False)
    assert record["released"] >= 1 and len(record["releases"]) >= 1
    rounds = record["decay"]["rounds"]
    assert len(rounds) >= 2 and rounds[-1]["selected"] >= 1      # replacements picked
    assert record["macs_ratio"] <= record["config"]["options"]["target"]["macs"]


# ---- the release rule against a plain-Python reference ----

def _layers(model, groups, s):
    """(conv, bn, consumer, channel) of structure ``s``."""
    g = groups.groups[int(groups.group_of[s])]
    conv, bn, consumer = (getattr(model, n) for n in LAYERS[g.root])
    return conv, bn, consumer, s - g.offset


def _floats(t) -> list[float]:
    return [float(v) for v in t.detach().flatten().tolist()]


def _raw_signals(model, groups, live):
    """Reference raw (C_rate, C_len) of every structure from the gradients, in Python floats:
    C_rate the cosine of (−∇, x) over the structure's BN γ and β, C_len the norm of its
    producer slices' gradient (conv row, γ, β) over the mean of the live ones in its group."""
    S = groups.num_structures
    c_rate, length = [0.0] * S, [0.0] * S
    for s in range(S):
        conv, bn, _, c = _layers(model, groups, s)
        grad = [float(bn.weight.grad[c]), float(bn.bias.grad[c])]
        x = [float(bn.weight[c].detach()), float(bn.bias[c].detach())]
        inner = -sum(a * b for a, b in zip(grad, x))
        c_rate[s] = inner / max(math.sqrt(sum(a * a for a in grad) * sum(b * b for b in x)), 1e-30)
        length[s] = math.sqrt(sum(v * v for v in _floats(conv.weight.grad[c])) + grad[0] ** 2
                              + grad[1] ** 2)
    c_len = [0.0] * S
    for g in groups.groups:
        ids = range(g.offset, g.offset + g.size)
        alive = [length[s] for s in ids if live[s]]
        mean = sum(alive) / len(alive) if alive else 0.0
        for s in ids:
            c_len[s] = length[s] / max(mean, 1e-12)
    return c_rate, c_len


class Reference:
    """Smooth Pruning's schedule and Self-Rectifying's release rule, a structure at a time, as
    the docstrings state them: the first decay application at selection, then one after each
    optimiser step; while decaying (and before ``release_until``) each step updates the moving
    averages with weight 1/window, divides them by 1 − β^count (β = 1 − 1/window), and releases
    the structure once it has ``window`` observations and its smoothed signals pass the rule."""

    def __init__(self, S, N, window, t_rate, t_len, rule, release_until):
        self.N, self.window, self.t_rate, self.t_len = N, window, t_rate, t_len
        self.rule, self.release_until = rule, release_until
        self.status, self.n, self.count = ["free"] * S, [0] * S, [0] * S
        self.ema_rate, self.ema_len = [0.0] * S, [0.0] * S
        self.smoothed, self.releases = {}, []

    def select(self, ids):
        for s in ids:
            self.status[s], self.n[s], self.count[s] = "decaying", 1, 0
            self.ema_rate[s] = self.ema_len[s] = 0.0

    def step(self, done, c_rate, c_len):
        beta = 1.0 - 1.0 / self.window
        self.smoothed = {}
        if done < self.release_until:
            for s, status in enumerate(self.status):
                if status != "decaying":
                    continue
                self.count[s] += 1
                self.ema_rate[s] = beta * self.ema_rate[s] + (1 - beta) * c_rate[s]
                self.ema_len[s] = beta * self.ema_len[s] + (1 - beta) * c_len[s]
                debias = 1 - beta ** self.count[s]
                rate, length = self.ema_rate[s] / debias, self.ema_len[s] / debias
                self.smoothed[s] = (rate, length)
                over = (rate > self.t_rate, length > self.t_len)
                hit = all(over) if self.rule == "all" else any(over)
                if hit and self.count[s] >= self.window:
                    self.status[s] = "released"
                    self.releases.append((done, s))
        for s, status in enumerate(self.status):
            if status == "decaying":
                self.n[s] += 1
                if self.n[s] >= self.N:
                    self.status[s] = "pruned"


# rounds -> the structures a host's selector starts at that round (8 per group, both groups)
PICKS = {0: [0, 1, 2, 8, 9], 5: [3, 10], 10: [4, 11], 15: [5, 12]}
N, WINDOW, STEPS = 10, 4, 30


def _own_slices(model, groups, s, status):
    """The slices only structure ``s`` scales: its BN's γ and β, and its conv row but for the
    columns of structures zeroed by now (``status``): a consumer column belongs to the row of
    the structure that decays (module docstring of ``decay``), and is zeroed with its own."""
    conv, bn, _, c = _layers(model, groups, s)
    row = conv.weight[c].detach()
    if conv is model.conv2:  # its columns are the structures of conv1's group
        g = next(g for g in groups.groups if g.root == "conv1")
        row = row[[k for k in range(g.size) if status[g.offset + k] != "pruned"]]
    return [row.clone(), bn.weight[c].detach().clone(), bn.bias[c].detach().clone()]


def _lockstep(t_rate, t_len, rule="all", window=WINDOW):
    """A real SmoothPruning + SelfRectifying run on the tiny net in float64, with the reference
    stepped beside it on raw signals computed here from the gradients. Checks after every step
    that both give every structure the same status, that the trace's raw and smoothed signals are
    the reference's, and that a released structure is left exactly as the optimiser left it.
    Returns the reference (its releases and the smoothed signals of every step)."""
    torch.manual_seed(0)
    model = Tiny().double()
    groups = ChannelGroups(model, torch.randn(SIZE, dtype=torch.float64))
    assert sorted(g.root for g in groups.groups) == ["conv1", "conv2"]
    sr = SelfRectifying(t_rate=t_rate, t_len=t_len, rule=rule, window=window, record=True)
    pruner = SmoothPruning(groups, None, N, rounds=sorted(PICKS), rectifier=sr, input_size=SIZE,
                           selector=lambda p, step: PICKS[step], release_until=STEPS)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    ref = Reference(groups.num_structures, N, window, t_rate, t_len, rule, STEPS)
    state = SimpleNamespace(optimizer=opt, step=0)
    pruner.on_fit_start(state)
    ref.select(PICKS[0])
    gen = torch.Generator().manual_seed(0)
    history = []
    for t in range(STEPS):
        x = torch.randn(16, *SIZE[1:], generator=gen, dtype=torch.float64)
        y = torch.randint(0, 4, (16,), generator=gen)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        done = t + 1
        c_rate, c_len = _raw_signals(model, groups, [s != "pruned" for s in ref.status])
        stepped = Tiny().double()                            # the weights the optimiser left
        stepped.load_state_dict(model.state_dict())
        ref.step(done, c_rate, c_len)
        state.step = t
        pruner.after_step(state)
        if done in PICKS:
            ref.select(PICKS[done])
        assert [CODE[int(v)] for v in pruner.status] == ref.status, done
        # a trace row [5, S] at every step before release_until, none from there on
        assert len(sr.trace) == min(done, STEPS - 1)
        trace = sr.trace[done - 1] if done < STEPS else None
        for s in range(groups.num_structures):
            if trace is not None:
                assert math.isclose(float(trace[3, s]), c_rate[s], rel_tol=1e-9, abs_tol=1e-12)
                assert math.isclose(float(trace[4, s]), c_len[s], rel_tol=1e-9, abs_tol=1e-12)
                assert bool(trace[2, s]) == (s in ref.smoothed)  # observed = decaying now
            if s in ref.smoothed:
                rate, length = ref.smoothed[s]
                assert math.isclose(float(trace[0, s]), rate, rel_tol=1e-9, abs_tol=1e-12)
                assert math.isclose(float(trace[1, s]), length, rel_tol=1e-9, abs_tol=1e-12)
            if ref.status[s] == "released":  # released now or before: the hook leaves it alone
                now = _own_slices(model, groups, s, ref.status)
                for a, b in zip(now, _own_slices(stepped, groups, s, ref.status)):
                    assert torch.equal(a, b), (done, s)
        history.append(dict(ref.smoothed))
    released = {s for _, s in ref.releases}
    assert {r["structure"] for r in pruner.release_log} == released
    assert sorted((r["step"], r["structure"]) for r in pruner.release_log) == sorted(ref.releases)
    for s in released:                                      # it kept weights: never zeroed
        assert pruner.status[s] == RELEASED
        assert all(v.abs().sum() > 0 for v in _own_slices(model, groups, s, ref.status))
    return ref, history


def test_smoothed_signals_match_the_reference_with_nothing_released():
    ref, history = _lockstep(float("inf"), float("inf"))
    assert ref.releases == [] and sum(len(h) for h in history) > 50
    # every structure a round started was observed N − 1 times, then zeroed
    assert ref.status.count("pruned") == sum(len(v) for v in PICKS.values())


def test_the_window_gate_releases_at_the_window_th_observation_and_not_before():
    """Thresholds every signal passes: each structure is released exactly ``window`` steps after
    the round that started it."""
    ref, _ = _lockstep(-float("inf"), -float("inf"))
    started = {s: r for r, ids in PICKS.items() for s in ids}
    assert sorted(ref.releases) == sorted((started[s] + WINDOW, s) for s in started)


def _first_eligible():
    """Smoothed (C_rate, C_len) of round 0's structures at their first eligible step (``window``),
    with nothing released before: every run agrees on them up to there."""
    _, history = _lockstep(float("inf"), float("inf"))
    return history[WINDOW - 1]


@pytest.mark.parametrize("rule", ["all", "any"])
def test_rule_all_and_any_with_thresholds_amid_the_signals(rule):
    """Thresholds amid round 0's smoothed signals at their first eligible step (midway between
    the two middle values of each). The run agrees with the reference at every step (checked
    inside), and at that step "any" releases exactly those passing one threshold or both, "all"
    those passing both."""
    first = _first_eligible()
    rates = sorted(r for r, _ in first.values())
    lengths = sorted(length for _, length in first.values())
    half = len(rates) // 2  # midway between two signals, far from either's rounding
    t_rate, t_len = (rates[half - 1] + rates[half]) / 2, (lengths[half - 1] + lengths[half]) / 2
    ref, _ = _lockstep(t_rate, t_len, rule)
    at_window = {s for step, s in ref.releases if step == WINDOW}
    passes = {s: (r > t_rate, length > t_len) for s, (r, length) in first.items()}
    want = {s for s, p in passes.items() if (all(p) if rule == "all" else any(p))}
    assert at_window == want
    # some pass both, some only one: "all" releases some, "any" strictly more
    assert any(all(p) for p in passes.values()) and any(p[0] != p[1] for p in passes.values())


@pytest.mark.parametrize("side", ["rate", "len"])
def test_finite_thresholds_on_both_sides_of_the_boundary(side):
    """One structure's smoothed signal at its first eligible step, s*: a threshold a hair below
    it releases s* there, a hair above it does not."""
    first = _first_eligible()
    s = PICKS[0][0]
    value = first[s][0 if side == "rate" else 1]
    hair = 1e-9 * max(1.0, abs(value))
    for threshold, released in ((value - hair, True), (value + hair, False)):
        t = (threshold, -float("inf")) if side == "rate" else (-float("inf"), threshold)
        ref, _ = _lockstep(*t, "all")
        assert ((WINDOW, s) in ref.releases) is released, threshold
    r, length = first[s]
    ref_all, _ = _lockstep(r - hair, length + 1e-9 * max(1.0, abs(length)), "all")
    ref_any, _ = _lockstep(r - hair, length + 1e-9 * max(1.0, abs(length)), "any")
    assert (WINDOW, s) not in ref_all.releases and (WINDOW, s) in ref_any.releases


@pytest.mark.parametrize("ratio, free_enough", [(0.25, True), (0.75, False)])
def test_released_structures_rank_after_every_free_one_in_later_rounds(ratio, free_enough):
    """``select``'s documented order: a later round picks free structures by score, and released
    ones only after all free ones of their group (each group keeps ``ratio`` of its 8 at most).
    At 0.25 the two free picks per group come from the six never-selected ones; at 0.75 the two
    never-selected ones are picked, then the lowest-scoring four of the six released."""
    torch.manual_seed(0)
    model = Tiny().double()
    groups = ChannelGroups(model, torch.randn(SIZE, dtype=torch.float64))
    window, later = 2, 5
    sr = SelfRectifying(t_rate=-float("inf"), t_len=-float("inf"), window=window)
    pruner = SmoothPruning(groups, ChannelRatio(ratio), 6, rounds=[0], rectifier=sr,
                           input_size=SIZE, release_until=later)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    state = SimpleNamespace(optimizer=opt, step=0)
    pruner.on_fit_start(state)
    gen = torch.Generator().manual_seed(1)
    for t in range(later):
        x = torch.randn(16, *SIZE[1:], generator=gen, dtype=torch.float64)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), torch.randint(0, 4, (16,), generator=gen)).backward()
        opt.step()
        state.step = t
        pruner.after_step(state)
    status = [int(v) for v in pruner.status]
    assert status.count(RELEASED) == 2 * math.floor(8 * ratio) and DECAYING not in status
    score = [float(v) for v in scores(groups, "l2")]
    pruner.round(later, opt)
    picked = {s for s, v in enumerate(pruner.status) if int(v) == DECAYING}
    for g in groups.groups:
        ids = range(g.offset, g.offset + g.size)
        room = min(math.floor(ratio * g.size), g.size - 1)
        order = sorted(ids, key=lambda s: (status[s] == RELEASED, score[s]))
        assert picked & set(ids) == set(order[:room]), g.root
        free = [s for s in ids if status[s] == FREE]
        assert (len(free) >= room) is free_enough
