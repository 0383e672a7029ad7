"""The zoo test's cases with their figures: per torchvision model, the float64 output change at
removal and the MACs kept.

What is measured
    Exactly what ``tests/test_zoo.py`` asserts (the cases are imported from it, so the two cannot
    drift): each model family's smallest member, float64, 30 % of every exact group decayed by
    Smooth Pruning over ``N`` SGD steps, then :func:`dpm_lab.pruning.finalize`. Printed per model:
    the structures, the largest |logit change| between the soft-zeroed and the removed network on
    two random inputs (the test's bound is 1e-9), and the MACs after / before. No timing: the
    figures do not depend on the machine's load.

Usage
    python benchmarks/zoo.py [--n 3] [--models resnet18 mobilenet_v2 ...] [--json out.json]
    DPM_LAB_ZOO=all python benchmarks/zoo.py     # every torchvision classification model
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_zoo import _models, decay_and_remove  # noqa: E402  (the test's own cases)

from dpm_lab.results import benchmark_record, write_record  # noqa: E402


def measure(name: str, N: int) -> dict:
    case = decay_and_remove(name, N)
    return {"model": name, "input": case["size"][-1], "structures": case["groups"].num_structures,
            "removed": len(case["pruner"].pruned_ids()),
            "max_output_change": (case["removed"] - case["soft"]).abs().max().item(),
            "max_output": case["soft"].abs().max().item(),
            "macs_ratio": case["macs"] / case["dense_macs"]}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=3, help="decay steps N (default 3)")
    p.add_argument("--models", nargs="+", default=None, help="default: the zoo test's models")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers to this file")
    args = p.parse_args(argv)
    rows = []
    print(f"{'model':22s} {'input':>5s} {'structures':>10s} {'removed':>7s} "
          f"{'max |change|':>12s} {'max |logit|':>11s} {'MACs kept':>9s}")
    for name in args.models or _models():
        r = measure(name, args.n)
        rows.append(r)
        print(f"{name:22s} {r['input']:5d} {r['structures']:10d} {r['removed']:7d} "
              f"{r['max_output_change']:12.2e} {r['max_output']:11.3f} {r['macs_ratio']:9.3f}")
    result = benchmark_record("zoo", "cpu", N=args.n, models=rows)
    if args.json:
        print(f"wrote {write_record(result, args.json)}")
    return result


if __name__ == "__main__":
    main()
