"""DDP on CPU: two gloo processes against one process with the same global batch.

The two-process run trains through the engine exactly as ``torchrun`` would (process group, DDP
forward, sharded ``TensorLoader``), with DPM in the loop (selection rounds, or OTOv2's DHSPG
requesting the decay) and Self-Rectifying releasing on a gradient signal. At every step each rank
gathers the other's DPM status vector and the test requires them to be equal; afterwards the
selections, releases and weights must match the single process. The model is float64 and has no
BatchNorm (under DDP, BN normalises each rank's shard: a different function of the batch, not a
rounding difference).
"""
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn

from dpm_lab.hosts.otov2.algorithm import DHSPG
from dpm_lab.pruning import PRUNED, ChannelGroups, ChannelRatio, SelfRectifying, SmoothPruning
from dpm_lab.training import distributed
from dpm_lab.training.config import TrainConfig
from dpm_lab.training.data import TensorLoader, synthetic_dataset
from dpm_lab.training.engine import Hook, fit

ROUNDS, N, EPOCHS, GLOBAL_BATCH = [0, 4, 8], 3, 2, 32


class Float64(nn.Module):
    def forward(self, x):
        return x.double()


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(Float64(), nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(16, 16, 3, padding=1, stride=2), nn.ReLU(),
                         nn.Conv2d(16, 32, 3, padding=1, stride=2), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10)).double()


class StatusLog(Hook):
    """After every step: this rank's DPM status, checked equal on all ranks (all_gather)."""

    def __init__(self, sp):
        self.sp, self.log = sp, []

    def after_step(self, state):
        status = self.sp.status.clone()
        if distributed.is_distributed():
            every = [torch.empty_like(status) for _ in range(distributed.world_size())]
            dist.all_gather(every, status)
            assert all(torch.equal(s, status) for s in every), f"ranks disagree at {state.step}"
        self.log.append(status)


class Interrupt(Hook):
    """A crash at the first step of epoch ``at`` (0-based), right after epoch ``at``'s checkpoint."""

    def __init__(self, at):
        self.at = at

    def before_step(self, state):
        if state.epoch == self.at:
            raise KeyboardInterrupt


def _fit(interrupt_at, checkpoint, resume, host="core"):
    """DPM on the core host (selection rounds) or inside OTOv2's DHSPG (the optimiser's
    projections request the decay), 2 epochs of 8 steps."""
    train, test = synthetic_dataset(256, 64, seed=0)
    model = _net()
    sr = SelfRectifying(t_rate=-float("inf"), t_len=1.0, window=1)  # releases on gradient length
    factory = None
    if host == "core":
        groups = ChannelGroups(model, torch.randn(1, 3, 32, 32))
        sp = SmoothPruning(groups, ChannelRatio(0.5), N, rounds=ROUNDS, rectifier=sr)
    else:
        total = EPOCHS * 256 // GLOBAL_BATCH
        groups = ChannelGroups(model, torch.randn(1, 3, 32, 32), consumers=False)
        sp = SmoothPruning(groups, None, N, rounds=(), rectifier=sr,
                           release_until=total - 2 * N)
        factory = DHSPG.factory(groups, target_sparsity=0.5, lmbda=5.0, epsilon=0.9,
                                start_step=2, seed=0, decay=sp, project_until=total - N)
    log = StatusLog(sp)
    cfg = TrainConfig(epochs=EPOCHS, lr=0.05, momentum=0.9, weight_decay=5e-4)
    history = fit(model, TensorLoader(train, GLOBAL_BATCH, train=True, seed=0),
                  TensorLoader(test, 48, train=False), cfg, [sp, log, Interrupt(interrupt_at)],
                  device="cpu", seed=0, progress=False, checkpoint=checkpoint, resume=resume,
                  optimizer_factory=factory)
    return model, sp, log, history


def _train(rank: int, world: int, port: int, out: str, interrupt_at: int = -1,
           host: str = "core") -> None:
    """One run; with ``interrupt_at``, a crash at that epoch and a resume from its checkpoint."""
    if world > 1:
        torch.set_num_threads(1)
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=world)
    checkpoint = out + ".ckpt" if interrupt_at >= 0 else None
    if interrupt_at >= 0:
        with pytest.raises(KeyboardInterrupt):
            _fit(interrupt_at, checkpoint, resume=False, host=host)
    model, sp, log, history = _fit(-1, checkpoint, resume=interrupt_at >= 0, host=host)
    if distributed.is_main():
        torch.save({"weights": model.state_dict(), "status": torch.stack(log.log),
                    "released": sp.release_log, "history": history}, out)
    del model, sp, log, history
    distributed.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                    reason="torch.distributed with gloo is not available")
@pytest.mark.parametrize("host", ["core", "otov2"])
def test_two_gloo_processes_match_one_process(tmp_path, host):
    one, two = tmp_path / "one.pt", tmp_path / "two.pt"
    _train(0, 1, 0, str(one), -1, host)
    mp.spawn(_train, args=(2, _free_port(), str(two), -1, host), nprocs=2, join=True)
    a, b = torch.load(one), torch.load(two)
    # the same decisions at every step: selections, decay, releases
    assert torch.equal(a["status"], b["status"])
    released = [(r["structure"], r["step"]) for r in a["released"]]
    assert released == [(r["structure"], r["step"]) for r in b["released"]]
    assert len(released) > 0 and (a["status"][-1] == PRUNED).any()  # SR acted, not on all
    # the same weights up to float64 rounding of the gradient average
    for k, w in a["weights"].items():
        torch.testing.assert_close(b["weights"][k], w, rtol=0, atol=1e-10)
    # accuracy and loss are over the whole split / global batch on both
    for h1, h2 in zip(a["history"], b["history"]):
        assert h1["test_acc"] == h2["test_acc"]
        # (the engine sums the epoch's loss in a float32 accumulator: float32 rounding)
        assert h1["train_loss"] == pytest.approx(h2["train_loss"], rel=1e-6)


def test_two_gloo_processes_resume_to_the_uninterrupted_run(tmp_path):
    full, resumed = tmp_path / "full.pt", tmp_path / "resumed.pt"
    mp.spawn(_train, args=(2, _free_port(), str(full)), nprocs=2, join=True)
    mp.spawn(_train, args=(2, _free_port(), str(resumed), 1), nprocs=2, join=True)
    a, b = torch.load(full), torch.load(resumed)
    for k, w in a["weights"].items():
        assert torch.equal(b["weights"][k], w), k
    steps = len(b["status"])  # the resumed run logs only the steps after the crash
    assert 0 < steps < len(a["status"]) and torch.equal(a["status"][-steps:], b["status"])
    assert a["released"] == b["released"]
    timing = ("epoch_time_s", "images_per_s")
    assert [{k: v for k, v in h.items() if k not in timing} for h in a["history"]] == \
        [{k: v for k, v in h.items() if k not in timing} for h in b["history"]]


def test_training_batch_must_split_over_ranks(monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    train, _ = synthetic_dataset(64, 8, seed=0)
    with pytest.raises(ValueError, match="training batch size 32 does not split over 3"):
        TensorLoader(train, 32, train=True)


def test_evaluation_shards_cover_the_split_once(monkeypatch):
    _, test = synthetic_dataset(8, 50, seed=0)
    seen = []
    for r in range(3):
        monkeypatch.setattr(distributed, "rank", lambda r=r: r)
        monkeypatch.setattr(distributed, "world_size", lambda: 3)
        seen += [y for _, ys in TensorLoader(test, 16, train=False) for y in ys.tolist()]
    assert sorted(seen) == sorted(test.labels.tolist()) and len(seen) == 50


def test_torchrun_two_processes_run_dpm_from_the_command_line(tmp_path):
    """The README's command: ``torchrun --nproc_per_node 2 -m dpm_lab run --method dpm --profile
    smoke``; rank 0 alone writes the records, which carry the world size."""
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "DPM_LAB_HOME": str(tmp_path), "OMP_NUM_THREADS": "1",
           "MPLBACKEND": "Agg"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(_free_port()), "-m", "dpm_lab", "run", "--method", "dpm",
           "--profile", "smoke", "--no-figure"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("final top-1") == 1  # rank 0 reports
    records = sorted((tmp_path / "results").rglob("*.json"))
    assert [r.parent.name for r in records] == ["core", "dense"]
    for r in records:
        assert json.loads(r.read_text())["config"]["data"]["world_size"] == 2
