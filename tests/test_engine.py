import pytest
import torch

from dpm_lab.experiments.profiles import get_profile
from dpm_lab.training.checkpoint import load_checkpoint
from dpm_lab.training.config import TrainConfig
from dpm_lab.training import engine
from dpm_lab.training.engine import Hook, LRFactor, fit
from dpm_lab.training.models import get_model


class Interrupt(Hook):
    """Simulates a crash right after the checkpoint of epoch ``at`` (1-based) was written: it
    raises at the first step of the next epoch (``at = -1``: never)."""

    def __init__(self, at):
        self.at = at

    def before_step(self, state):
        if state.epoch == self.at:
            raise KeyboardInterrupt


def _model(seed=0):
    torch.manual_seed(seed)
    return get_model("resnet20")


def test_resume_after_interrupt_equals_uninterrupted_run(loaders, tmp_path):
    train, test = loaders
    cfg = TrainConfig(epochs=3, lr=0.05, schedule="cosine")
    full = _model()
    h_full = fit(full, train, test, cfg, seed=1, progress=False)

    ck = tmp_path / "run.ckpt"
    part = _model()
    with pytest.raises(KeyboardInterrupt):
        fit(part, train, test, cfg, hooks=[Interrupt(at=2)], checkpoint=ck, seed=1, progress=False)
    assert load_checkpoint(ck)["epoch"] == 2  # a real resume, from epoch 2 of 3
    resumed = _model(seed=123)  # a fresh process would start from a different init
    h_res = fit(resumed, train, test, cfg, hooks=[Interrupt(at=-1)], checkpoint=ck, resume=True,
                seed=1, progress=False)
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    assert [h["test_acc"] for h in h_full] == [h["test_acc"] for h in h_res]


def test_a_checkpoint_resumes_with_added_hooks_only_if_their_state_is_optional(loaders,
                                                                               tmp_path):
    """A recording hook added after a checkpoint was written starts fresh; any other change in
    the hooks is refused, naming the counts."""
    train, test = loaders
    cfg = TrainConfig(epochs=2, lr=0.05)
    ck = tmp_path / "run.ckpt"
    with pytest.raises(KeyboardInterrupt):
        fit(_model(), train, test, cfg, hooks=[Interrupt(at=1)], checkpoint=ck, progress=False)

    class Recorder(Hook):
        optional_state = True
        steps = 0

        def after_step(self, state):
            self.steps += 1

    with pytest.raises(ValueError, match="written with 1 hooks, this run has 2"):
        fit(_model(), train, test, cfg, hooks=[Interrupt(at=-1), Interrupt(at=-1)],
            checkpoint=ck, resume=True, progress=False)
    recorder = Recorder()
    fit(_model(), train, test, cfg, hooks=[Interrupt(at=-1), recorder], checkpoint=ck,
        resume=True, progress=False)
    assert recorder.steps == len(train)                 # it saw the resumed epoch only


def test_hooks_see_grads_before_step_and_new_weights_after(loaders):
    train, test = loaders
    seen = []

    class Probe(Hook):
        def on_fit_start(self, state):
            seen.append("start")

        def before_step(self, state):
            w = state.model.fc.weight
            seen.append(("before", w.grad is not None, w.detach().clone()))

        def after_step(self, state):
            seen.append(("after", state.model.fc.weight.detach().clone(), state.step))

    fit(_model(), train, test, TrainConfig(epochs=1, lr=0.1, momentum=0.0, weight_decay=0.0),
        hooks=[Probe()], progress=False)
    assert seen[0] == "start"
    before, after = seen[1], seen[2]
    assert before[1] is True and not torch.equal(before[2], after[1]) and after[2] == 0
    assert len(seen) == 1 + 2 * len(train)


def test_schedules():
    spe = 10
    multi = LRFactor(TrainConfig(epochs=10, schedule="multistep", milestones=(5, 8)), spe)
    assert [multi(i) for i in (0, 49, 50, 80)] == pytest.approx([1, 1, 0.1, 0.01])
    cos = LRFactor(TrainConfig(epochs=10, schedule="cosine"), spe)
    assert cos(0) == 1 and cos(50) == pytest.approx(0.5) and cos(100) == pytest.approx(0)
    one = LRFactor(TrainConfig(epochs=10, schedule="onecycle"), spe)
    assert one(0) < 0.1 and one(30) == pytest.approx(1) and one(100) < 1e-3


@pytest.mark.parametrize("kwargs, bad", [({"epochs": 0}, "0"), ({"epochs": 1, "lr": -1}, "-1"),
                                         ({"epochs": 1, "schedule": "step"}, "'step'")])
def test_bad_config_names_the_value(kwargs, bad):
    with pytest.raises(ValueError, match=bad):
        TrainConfig(**kwargs)


def test_profiles_switch_by_environment(monkeypatch):
    monkeypatch.setenv("DPM_LAB_PROFILE", "paper")
    assert get_profile().model == "resnet56" and get_profile().dense.epochs == 200
    assert get_profile("mini").dataset == "cifar10-slice"
    with pytest.raises(ValueError, match="'huge'.*smoke, mini, full, paper"):
        get_profile("huge")


def test_validation_loader_is_evaluated_every_epoch(loaders, synthetic):
    from dpm_lab.training.data import TensorLoader
    train, test = loaders
    val = TensorLoader(synthetic[1].subset(64), 64, train=False)
    history = fit(_model(), train, test, TrainConfig(epochs=2, lr=0.05), progress=False,
                  val_loader=val)
    assert [0 <= h["val_acc"] <= 100 for h in history] == [True, True]


def test_with_epochs_scales_milestones():
    cfg = TrainConfig(epochs=200, schedule="multistep", milestones=(120, 150, 180))
    assert cfg.with_epochs(20).milestones == (12, 15, 18)
    assert cfg.with_epochs(2).milestones == (1,)  # collapsed ones merge, none at 0 or the end
    with pytest.raises(ValueError, match="0"):
        cfg.with_epochs(0)


@pytest.mark.parametrize("device, kernels, expected", [
    ("cpu", "AVX512", torch.channels_last), ("cpu", "AVX2", torch.contiguous_format),
    ("cpu", "DEFAULT", torch.contiguous_format), ("cuda", "AVX2", torch.channels_last)])
def test_channels_last_only_where_its_kernels_are_fast_and_sound(monkeypatch, device, kernels,
                                                                 expected):
    """On AVX2, oneDNN's channels_last weight gradient of a 1x1 stride-2 convolution with 5 input
    channels (a pruned ResNet's shortcut) corrupts the heap: such a CPU trains NCHW, model and
    batches alike (``memory_format``'s docstring has the crash)."""
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: kernels)
    # cached per process: the uncached function asks again under the patched kernels
    monkeypatch.setattr(engine, "memory_format", engine.memory_format.__wrapped__)
    assert engine.memory_format(device) == expected
    if device == "cpu":
        other = ({torch.channels_last, torch.contiguous_format} - {expected}).pop()
        model = engine.place_model(torch.nn.Conv2d(5, 6, 3), device)
        x = engine._layout(torch.randn(2, 5, 8, 8), torch.device(device))
        for t in (model.weight, x):
            assert t.is_contiguous(memory_format=expected)
            assert not t.is_contiguous(memory_format=other)
