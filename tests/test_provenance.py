"""Provenance (issue 24, item 7): a run's identity follows the code that computes it, and its
record says where it was computed.

Dense run a30c3bafa5b6 (``results/reference``) scored 77.48 % at 2b899ea and 76.40 % at
dda2847. No commit between them changes what a single process computes at a fixed thread count
(the first epoch is bit-identical at both revisions); the 2b899ea run trained with torch's 2
intra-op threads, the dda2847 one with 1, as every process of ``sweep --workers 2`` does on 2
cores (``torch.set_num_threads(cores // workers)``, from 04222aa). Its records could not say so.
"""
import json
import math

import pytest
import torch

import dpm_lab
from dpm_lab.experiments import identity, runspec
from dpm_lab.experiments.profiles import get_profile
from dpm_lab.experiments.results import checkpoint_path, environment, load_records, provenance
from dpm_lab.experiments.runner import loaders, train_dense
from dpm_lab.experiments.runspec import RunSpec, resolve
from dpm_lab.reporting.figures import provenance_notes
from dpm_lab.training import paths
from dpm_lab.training.config import TrainConfig
from dpm_lab.training.engine import fit
from dpm_lab.training.models import get_model

from conftest import Float64Batches, needs_slice

# ---- the training path is versioned, and the version is pinned ------------------------------

# The pinned run's history per TRAINING_PATH_VERSION: per epoch the mean training loss (the
# engine sums it in float32), training and validation top-1, and test top-1, then the sum of
# squares of the final parameters (float64 throughout). A change to the training path (split,
# loaders, augmentation, engine, schedule, optimiser, loss, the model's layers) fails this test
# until dpm_lab.TRAINING_PATH_VERSION is bumped and the new run's values are added here under it.
# The models' random initialisation is replaced here (see _integer_init); ResNet-20's is pinned
# on its own (PINNED_INIT).
PINNED = {
    1: {"train_loss": [3.450885772705078, 3.572887738545736],
        "train_acc": [4.166666666666667, 20.833333333333332], "val_acc": [0.0, 28.571428571428573],
        "test_acc": [18.75, 12.5], "weights_sq": 2379.849358468102},
}


def _integer_init(model: torch.nn.Module) -> None:
    """Convolution and linear weights and biases drawn as integers, then scaled in float64
    (He-uniform variance for the weights); BatchNorm keeps its constant 1 and 0. torch's
    float32 ``normal_`` rounds differently under its DEFAULT and AVX2 kernels, so the models'
    own initialisation is not the same on every CPU; integers and correctly rounded float64
    arithmetic are."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                scale = math.sqrt(6.0 / m.weight[0].numel())
                for p in (q for q in (m.weight, m.bias) if q is not None):
                    p.copy_(torch.randint(-1000, 1001, p.shape, generator=g) / 1000 * scale)


def _pinned_run() -> dict:
    """Two epochs of three steps through the real training path (the CIFAR-10 slice split by
    ``experiments.loaders``: validation hold-out, shuffling, crop and flip, normalisation;
    ``engine.fit``: one-cycle schedule, Nesterov SGD with weight decay, label-smoothed loss,
    channels_last) on ResNet-20 in float64."""
    profile = get_profile("smoke").with_(dataset="cifar10-slice", model="resnet20", batch_size=8,
                                         n_train=32, n_test=16, val_fraction=0.25, val_seed=0)
    data = loaders(profile, 0, "cpu")
    model = get_model("resnet20", data.num_classes).double()
    _integer_init(model)
    cfg = TrainConfig(epochs=2, lr=0.1, schedule="onecycle", nesterov=True, label_smoothing=0.1,
                      weight_decay=5e-4)
    history = fit(model, Float64Batches(data.train), Float64Batches(data.test), cfg, device="cpu",
                  seed=0, progress=False, val_loader=Float64Batches(data.val))
    out = {k: [h[k] for h in history] for k in ("train_loss", "train_acc", "val_acc", "test_acc")}
    out["weights_sq"] = sum(float((p.detach() ** 2).sum()) for p in model.parameters())
    return out


@needs_slice
def test_a_smoke_run_computes_what_its_training_path_version_pinned():
    assert dpm_lab.TRAINING_PATH_VERSION in PINNED, (
        f"no pinned values for training path version {dpm_lab.TRAINING_PATH_VERSION}: add "
        "_pinned_run()'s values to PINNED")
    got, want = _pinned_run(), PINNED[dpm_lab.TRAINING_PATH_VERSION]
    same = (all(got[k] == want[k] for k in ("train_acc", "val_acc", "test_acc"))  # image counts
            and got["train_loss"] == pytest.approx(want["train_loss"], rel=1e-12, abs=0)
            and got["weights_sq"] == pytest.approx(want["weights_sq"], rel=1e-12, abs=0))
    assert same, (f"the training path computes {got}, not what version "
                  f"{dpm_lab.TRAINING_PATH_VERSION} pinned ({want}): bump "
                  "dpm_lab.TRAINING_PATH_VERSION and pin the new values under it")


# get_model("resnet20") under torch.manual_seed(0), built in float64, per TRAINING_PATH_VERSION:
# over its parameter tensors p_t, t = 1, 2, ... in construction order, the sums of t * ||p_t||^2
# and of t * sum(p_t).
# float64 normal_ is not bit-identical under torch's DEFAULT, AVX2 and AVX512 kernels (entries
# differ by up to 6e-14 relative, measured with ATEN_CPU_CAPABILITY), but both sums agree to 1e-15.
PINNED_INIT = {1: (87072.45232233944, 31498.354612437095)}


def test_resnet20_initialisation_is_what_its_training_path_version_pinned():
    """What the pinned run cannot see (it replaces the initialisation): the distributions, fan
    modes and draw order of ResNet-20's own initialisation. Needs no data."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(0)
        model = get_model("resnet20")
    finally:
        torch.set_default_dtype(default)
    params = [p.detach() for p in model.parameters()]
    assert all(p.dtype == torch.float64 for p in params)
    got = (sum((t + 1) * float((p ** 2).sum()) for t, p in enumerate(params)),
           sum((t + 1) * float(p.sum()) for t, p in enumerate(params)))
    want = PINNED_INIT[dpm_lab.TRAINING_PATH_VERSION]
    assert got == pytest.approx(want, rel=1e-12, abs=0), (
        f"ResNet-20's initialisation gives {got}, not what version "
        f"{dpm_lab.TRAINING_PATH_VERSION} pinned ({want}): bump dpm_lab.TRAINING_PATH_VERSION "
        "and pin the new values under it")


def test_the_training_path_version_is_part_of_every_run_identity(monkeypatch):
    smoke = get_profile("smoke")
    specs = [RunSpec(profile=smoke, method=m) for m in ("single-step", "sp")] + \
        [RunSpec(host="depgraph", method="host", profile=smoke)]
    dense_id = lambda: identity.config_hash(identity.dense_config(smoke, 0))  # noqa: E731
    before = [resolve(s).run_id for s in specs] + [dense_id()]
    assert all(resolve(s).config["training_path"] == dpm_lab.TRAINING_PATH_VERSION for s in specs)
    for module in (runspec, identity):  # a pruning run's identity, and a dense model's
        monkeypatch.setattr(module, "TRAINING_PATH_VERSION", dpm_lab.TRAINING_PATH_VERSION + 1)
    after = [resolve(s).run_id for s in specs] + [dense_id()]
    assert all(a != b for a, b in zip(before, after))


# ---- records say where they were computed, and name checkpoints relative to home -----------

def test_records_carry_cpu_threads_torch_build_and_a_checkpoint_relative_to_home(tmp_path,
                                                                                  monkeypatch):
    monkeypatch.setenv("DPM_LAB_HOME", str(tmp_path / "a"))
    threads = torch.get_num_threads()
    other = 2 if threads == 1 else 1  # not the default, so the record cannot match by chance
    torch.set_num_threads(other)
    try:
        _, record = train_dense(get_profile("smoke").with_(dataset="synthetic"), 0,
                                device="cpu", progress=False)
    finally:
        torch.set_num_threads(threads)
    build = record["torch_build"]
    assert record["threads"] == other
    assert record["cpu"] and record["cpu"] == environment()["cpu"]
    assert build["version"] == torch.__version__ and build["cuda"] == torch.version.cuda
    assert build["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert record["config"]["training_path"] == dpm_lab.TRAINING_PATH_VERSION

    name = record["checkpoint"]
    assert not name.startswith("/") and name.startswith("runs/smoke/dense/")
    assert checkpoint_path(record) == tmp_path / "a" / name and checkpoint_path(record).exists()
    (tmp_path / "a").rename(tmp_path / "b")  # the home folder moved (another machine)
    monkeypatch.setenv("DPM_LAB_HOME", str(tmp_path / "b"))
    assert checkpoint_path(record) == tmp_path / "b" / name and checkpoint_path(record).exists()
    elsewhere = tmp_path / "elsewhere" / "model.pt"  # outside home: absolute, as it is
    assert paths.to_home(elsewhere) == str(elsewhere)


def _record(git, cpu=None, threads=None, training_path=None, dirty=False):
    r = {"git": git, "git_dirty": dirty, "config": {"kind": "dense"}}
    if cpu is not None:
        r.update(cpu=cpu, threads=threads)
    if training_path is not None:
        r["config"]["training_path"] = training_path
    return r


def test_provenance_lists_each_combination_of_code_cpu_threads_and_training_path():
    records = [_record("a", "Xeon", 2, 1), _record("a", "Xeon", 2, 1), _record("a", "Xeon", 1, 1),
               _record("a", "EPYC", 2, 1), _record("b", "Xeon", 2, 1), _record("a", "Xeon", 2, 2),
               _record("a", dirty=True)]
    table = provenance(records)
    assert len(table) == 6 and table["runs"].sum() == 7
    assert table.set_index(["git", "cpu", "threads", "training_path"])["runs"].to_dict()[
        ("a", "Xeon", "2", "1")] == 2
    old = table[table["git"] == "a-dirty"].iloc[0]
    assert (old["cpu"], old["threads"], old["training_path"]) == ("unknown", "unknown",
                                                                  "unversioned")
    assert provenance_notes(records[:2]) == []
    notes = provenance_notes(records[:3])
    assert len(notes) == 3 and "2 combinations" in notes[0]


def test_report_notes_and_figures_say_when_a_table_mixes_code_or_cpus(tmp_path):
    """The recorded dense models of ``mini`` come from 292d241 and 76bb91a: the report's dense
    table and a figure of them say so; those of one revision alone get no note."""
    import matplotlib.pyplot as plt

    from dpm_lab.reporting.figures import accuracy_vs_macs, report

    recorded = sorted((paths.reference_dir("results") / "mini" / "dense").glob("*.json"))
    for folder, keep in (("both", ("292d241", "76bb91a")), ("one", ("292d241",))):
        (tmp_path / folder / "mini" / "dense").mkdir(parents=True)
        for f in recorded:
            if json.loads(f.read_text())["git"].startswith(keep):
                (tmp_path / folder / "mini" / "dense" / f.name).write_text(f.read_text())
    both = report("mini", tmp_path / "both", tmp_path)[0]
    assert both.name == "dense" and "2 combinations" in both.notes[0]
    assert any(n.strip().startswith("292d24145c5f, CPU unknown, unknown threads, training path "
                                    "unversioned: 3 runs") for n in both.notes)
    assert not any("combinations" in n for n in report("mini", tmp_path / "one", tmp_path)[0].notes)

    for folder, noted in (("both", True), ("one", False)):
        accuracy_vs_macs(load_records(tmp_path / folder / "mini" / "dense"),
                         out=tmp_path / f"{folder}.png", show=True)  # left open: read its texts
        fig = plt.gcf()
        assert any("2 combinations" in t.get_text() for t in fig.texts) == noted
        plt.close(fig)


def test_committed_records_with_absolute_checkpoints_still_resolve(tmp_path, monkeypatch):
    """Records written before name the path on the machine that ran them: used as it is where
    it exists, else found below this home's runs folder."""
    reference = paths.reference_dir("results")
    records = [json.loads(f.read_text())
               for f in sorted((reference / "mini" / "dense").glob("*.json"))]
    # the records written before checkpoints were stored relative to $DPM_LAB_HOME
    record = next(r for r in records if r["checkpoint"].startswith("/"))
    stored = record["checkpoint"]
    assert "/runs/" in stored
    monkeypatch.setenv("DPM_LAB_HOME", str(tmp_path))
    assert str(checkpoint_path(record)) == stored  # found nowhere: the path the record names
    moved = tmp_path / "runs" / stored.split("/runs/", 1)[1]
    moved.parent.mkdir(parents=True)
    moved.write_bytes(b"")
    assert checkpoint_path(record) == moved
    here = tmp_path / "abs" / "model.pt"  # an absolute path that exists wins
    here.parent.mkdir()
    here.write_bytes(b"")
    assert checkpoint_path({"checkpoint": str(here)}) == here
