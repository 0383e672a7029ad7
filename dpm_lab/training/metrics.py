"""Cost metrics: MACs and parameters (counted by torch-pruning) and measured latency; and one
trainability signal, the input-output Jacobian's RMS singular value."""
from __future__ import annotations

import time

import torch
import torch.nn as nn
import torch_pruning as tp


def example_input(model: nn.Module, input_size=(1, 3, 32, 32)) -> torch.Tensor:
    """A random input of ``input_size`` on the model's device and in its dtype, for tracing
    (dependency graphs, MAC counting); float64 models are traced in float64."""
    p = next(model.parameters())
    return torch.randn(*input_size, device=p.device, dtype=p.dtype)


def macs_params(model: nn.Module, input_size=(1, 3, 32, 32)) -> tuple[int, int]:
    """(MACs, parameters) of one forward pass at ``input_size``, via
    ``torch_pruning.utils.count_ops_and_params`` (it counts current shapes, on a copy)."""
    macs, params = tp.utils.count_ops_and_params(model, example_input(model, input_size))
    return int(macs), int(params)


@torch.no_grad()
def latency_ms(model: nn.Module, batch_size: int = 128, input_hw=(32, 32), device=None,
               warmup: int = 3, reps: int = 10) -> float:
    """Median forward latency in milliseconds of ``model`` (eval mode) at ``batch_size``.

    CPU: wall clock around each forward. CUDA: CUDA events, so kernel time is measured rather
    than launch time.
    """
    device = torch.device(device) if device else next(model.parameters()).device
    model = model.eval().to(device)
    x = torch.randn(batch_size, 3, *input_hw, device=device)
    for _ in range(warmup):
        model(x)
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            model(x)
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - t0) * 1e3)
    return float(sorted(times)[len(times) // 2])


def jacobian_rms_singular_value(model: nn.Module, x: torch.Tensor, probes: int = 8,
                                seed: int = 0) -> float:
    """RMS singular value of the input-output Jacobian J of ``model`` (eval mode), per sample,
    averaged over the batch ``x``: √(tr(JᵀJ) / k) for k outputs, with tr(JᵀJ) = E‖J v‖² over
    Gaussian probes v (Hutchinson; ``probes`` forward-mode passes). TPP's trainability argument
    is about this spectrum: pruning that shrinks it slows the training that follows."""
    model.eval()
    g = torch.Generator(device=x.device).manual_seed(seed)
    total = torch.zeros(len(x), device=x.device, dtype=torch.float64)
    for _ in range(probes):
        v = torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)
        out, jv = torch.func.jvp(model, (x,), (v,))
        total += jv.detach().flatten(1).double().pow(2).sum(1)
    return float((total / probes / out[0].numel()).sqrt().mean())


def conv_widths(model: nn.Module) -> list[int]:
    """Output channels of every ``nn.Conv2d``, in the model's order: what a record keeps of where
    a method took its channels from."""
    return [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
