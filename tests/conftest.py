"""Shared fixtures: small generated data (no files needed) and the real slice when present."""
import pytest
import torch
import torch.nn as nn

from dpm_lab.training.config import TrainConfig
from dpm_lab.training.data import SLICE_FILE, TensorLoader, data_roots, synthetic_dataset
from dpm_lab.training.engine import TrainState, make_optimizer


@pytest.fixture
def synthetic():
    return synthetic_dataset(256, 128, seed=0)


@pytest.fixture
def loaders(synthetic):
    train, test = synthetic
    return TensorLoader(train, 64, train=True, seed=0), TensorLoader(test, 128, train=False)


def slice_available() -> bool:
    return any((r / SLICE_FILE).exists() for r in data_roots())


needs_slice = pytest.mark.skipif(not slice_available(), reason="CIFAR-10 slice not found (CI has it)")


def whole_cifar10_available() -> bool:
    """The ``full`` profile can be built: official CIFAR-10 or its JPEG copy is found."""
    from dpm_lab.training.data import DatasetNotFoundError, whole_cifar10
    try:
        whole_cifar10()
        return True
    except DatasetNotFoundError:
        return False


needs_whole_cifar10 = pytest.mark.skipif(not whole_cifar10_available(),
                                         reason="neither CIFAR-10 nor its JPEG copy found (CI has "
                                                "the JPEG copy)")


def randomize_bn(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every BN non-trivial affine parameters and running statistics, so that eval-mode
    equivalence checks cannot pass by accident."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data = torch.rand(m.num_features, generator=g) + 0.5
            m.bias.data = torch.randn(m.num_features, generator=g) * 0.1
            m.running_mean = torch.randn(m.num_features, generator=g) * 0.1
            m.running_var = torch.rand(m.num_features, generator=g) + 0.5


@torch.no_grad()
def calibrate_bn(model: torch.nn.Module, input_size, batches: int = 2, seed: int = 0,
                 dtype=torch.float32) -> None:
    """Set BN running statistics from train-mode forward passes, so eval-mode outputs have a
    realistic O(1) scale (random statistics make a deep net's logits explode to ~1e3, where an
    absolute tolerance would only measure float precision)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average
    model.train()
    for _ in range(batches):
        model(torch.randn(8, *input_size[1:], generator=g).to(dtype))
    model.eval()


class Float64Batches:
    """A loader's batches in float64, for a float64 model (float32 to float64 is exact): float64
    sums rounded in another order differ by ~1e-16 relative, where float32 differs by 1e-7 and
    more, so runs compare exactly to rounding. ``stride``: keep every stride-th pixel in both
    directions (a smaller input, fewer MACs)."""

    def __init__(self, loader, stride: int = 1):
        self.loader, self.stride = loader, stride

    def __len__(self):
        return len(self.loader)

    def set_epoch(self, epoch):
        self.loader.set_epoch(epoch)

    def __iter__(self):
        s = self.stride
        return ((x[..., ::s, ::s].double(), y) for x, y in self.loader)


class Stepper:
    """A bare training loop on random batches that calls a hook like the engine does."""

    def __init__(self, model, lr=0.05, momentum=0.9, weight_decay=5e-4, seed=0,
                 dtype=torch.float32, input_shape=(3, 32, 32), batch_size=8):
        cfg = TrainConfig(epochs=1, lr=lr, momentum=momentum, weight_decay=weight_decay)
        self.model = model
        self.opt = make_optimizer(model, cfg)
        sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda _: 1.0)
        self.state = TrainState(model, self.opt, sched, cfg, steps_per_epoch=1)
        self.g = torch.Generator().manual_seed(seed)
        self.dtype, self.input_shape, self.batch_size = dtype, tuple(input_shape), batch_size

    def step(self, hook=None):
        x = torch.randn(self.batch_size, *self.input_shape, generator=self.g).to(self.dtype)
        y = torch.randint(0, 10, (self.batch_size,), generator=self.g)
        self.opt.zero_grad()
        torch.nn.functional.cross_entropy(self.model(x), y).backward()
        if hook:
            hook.before_step(self.state)
        self.opt.step()
        if hook:
            hook.after_step(self.state)
        self.state.step += 1


class TwoBranches(nn.Module):
    """Two conv branches on the input, concatenated into the output layer: two groups whose
    scores share no parameter, so a taken channel of one can change the other's scores only
    through a normaliser."""

    def __init__(self):
        super().__init__()
        self.a, self.bn_a = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.b, self.bn_b = nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6)
        self.pool, self.head = nn.AdaptiveAvgPool2d(1), nn.Linear(14, 4)

    def forward(self, x):
        y = torch.cat([torch.relu(self.bn_a(self.a(x))), torch.relu(self.bn_b(self.b(x)))], 1)
        return self.head(self.pool(y).flatten(1))


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network and no CIFAR-10 slice anywhere: torchvision's download fails as it does
    offline, the data roots are empty folders under ``tmp_path``, and the working directory has
    no data/ or shared/data/ in it or above it."""
    from urllib.error import URLError

    import torchvision.datasets.cifar

    def no_network(*args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")
    monkeypatch.setattr(torchvision.datasets.cifar, "download_and_extract_archive", no_network)
    monkeypatch.setenv("DPM_LAB_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("DPM_LAB_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
