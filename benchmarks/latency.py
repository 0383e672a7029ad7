"""Latency against MACs after removal: does a network with half the MACs run in half the time?

What is measured
    For each case, a freshly initialised model (seed 0) is pruned once by
    :func:`dpm_lab.pruning.single_step_prune` with the L2 criterion, and
    :func:`dpm_lab.training.metrics.latency_ms` (eval mode, median of ``--reps`` forward passes of a
    ``--batch`` batch of 32x32 images) times the dense and the pruned network. What is removed
    does not depend on training for this question: latency follows the layer widths, and a
    trained network's selection gives other channels but similar widths.

    Cases: ``mobilenet_v2`` and ``vit_tiny`` pruned by channels to ``--target`` of the MACs, and
    ``vit_tiny heads``: the ViT after :func:`dpm_lab.training.models.attention.split_attention`,
    with ``--head-ratio`` of the heads of every block removed (``granularity="head"``; heads alone
    cannot reach a low MACs target, the MLPs hold the rest).

How to read the result
    ``latency ratio`` / ``MACs ratio``: above 1, time falls less than arithmetic does (small
    layers, depthwise convolutions and attention are bound by memory traffic). Only meaningful on
    an otherwise idle machine.

Usage
    python benchmarks/latency.py [--batch 128] [--target 0.5] [--device cpu] [--json out.json]
"""
from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch

from dpm_lab.experiments.results import benchmark_record, write_record
from dpm_lab.pruning import ChannelGroups, ChannelRatio, MacsTarget, single_step_prune
from dpm_lab.training.metrics import latency_ms, macs_params
from dpm_lab.training.models import get_model, input_size
from dpm_lab.training.models.attention import split_attention


def case(name: str, model, target, batch: int, device, reps: int, **groups_kw) -> dict:
    size = input_size("vit_tiny" if name.startswith("vit") else name)
    dense = model.to(device).eval()
    pruned = copy.deepcopy(dense)
    groups = ChannelGroups(pruned, torch.randn(*size, device=device), **groups_kw)
    single_step_prune(pruned, target, "l2", size, groups)
    dense_macs, macs = macs_params(dense, size)[0], macs_params(pruned, size)[0]
    dense_ms = latency_ms(dense, batch, size[2:], device, reps=reps)
    ms = latency_ms(pruned, batch, size[2:], device, reps=reps)
    return {"case": name, "dense_macs": dense_macs, "macs": macs, "macs_ratio": macs / dense_macs,
            "dense_ms": dense_ms, "ms": ms, "latency_ratio": ms / dense_ms}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=128, help="batch size (default 128)")
    p.add_argument("--target", type=float, default=0.5, help="MACs kept (default 0.5)")
    p.add_argument("--head-ratio", type=float, default=0.5, help="heads removed (default 0.5)")
    p.add_argument("--reps", type=int, default=20, help="timed forward passes (default 20)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers to this file")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    rows = [case("mobilenet_v2", get_model("mobilenet_v2"), MacsTarget(args.target), args.batch,
                 device, args.reps),
            case("vit_tiny", get_model("vit_tiny"), MacsTarget(args.target), args.batch, device,
                 args.reps),
            case("vit_tiny heads", split_attention(get_model("vit_tiny")),
                 ChannelRatio(args.head_ratio), args.batch, device, args.reps, granularity="head")]
    print(f"device: {device}  batch: {args.batch}  threads: {torch.get_num_threads()}")
    print(f"{'case':16s} {'MACs ratio':>10s} {'dense ms':>9s} {'pruned ms':>9s} {'latency ratio':>13s}")
    for r in rows:
        print(f"{r['case']:16s} {r['macs_ratio']:10.3f} {r['dense_ms']:9.2f} {r['ms']:9.2f} "
              f"{r['latency_ratio']:13.3f}")
    result = benchmark_record("latency", device, batch=args.batch, target=args.target,
                              head_ratio=args.head_ratio, reps=args.reps, cases=rows)
    if args.json:
        print(f"wrote {write_record(result, args.json)}")
    return result


if __name__ == "__main__":
    main()
