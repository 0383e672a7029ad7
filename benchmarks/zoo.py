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
    DPM_LAB_ZOO=all python benchmarks/zoo.py --isolate   # every torchvision classification model

``--isolate`` measures each model in a child process of its own, so that one crash or
out-of-memory kill costs that model alone (it is listed under ``failed`` with its exit status),
and records the child's peak resident memory: regnet_y_128gf needs about 21 GiB in float64.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_zoo import _models, decay_and_remove  # noqa: E402  (the test's own cases)

from dpm_lab.experiments.results import benchmark_record, write_record


def measure(name: str, N: int) -> dict:
    case = decay_and_remove(name, N)
    return {"model": name, "input": case["size"][-1], "structures": case["groups"].num_structures,
            "removed": len(case["pruner"].pruned_ids()),
            "max_output_change": (case["removed"] - case["soft"]).abs().max().item(),
            "max_output": case["soft"].abs().max().item(),
            "macs_ratio": case["macs"] / case["dense_macs"]}


def measure_isolated(name: str, N: int) -> dict:
    """:func:`measure` in a child process, with its peak resident memory; raises RuntimeError
    with the child's last line of output when it fails (an exception, or a kill at the memory
    limit)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "one.json"
        child = subprocess.Popen([sys.executable, __file__, "--n", str(N), "--models", name,
                                  "--json", str(out)], stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
        log = child.stdout.read()
        child.stdout.close()
        _, status, usage = os.wait4(child.pid, 0)  # wait() would not give the child's rusage
        code = child.returncode = os.waitstatus_to_exitcode(status)
        if code != 0:
            last = log.strip().splitlines()[-1] if log.strip() else ""
            reason = f"killed by signal {-code}" if code < 0 else f"exit {code}"
            raise RuntimeError(f"{reason}: {last}")
        row = json.loads(out.read_text())["models"][0]
    return {**row, "peak_rss_gib": round(usage.ru_maxrss / 2**20, 2)}  # ru_maxrss is in KiB


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=3, help="decay steps N (default 3)")
    p.add_argument("--models", nargs="+", default=None, help="default: the zoo test's models")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers to this file")
    p.add_argument("--isolate", action="store_true",
                   help="one child process per model; a failure is recorded, not raised")
    args = p.parse_args(argv)
    rows, failed = [], {}
    print(f"{'model':22s} {'input':>5s} {'structures':>10s} {'removed':>7s} "
          f"{'max |change|':>12s} {'max |logit|':>11s} {'MACs kept':>9s}")
    for name in args.models or _models():
        if not args.isolate:
            r = measure(name, args.n)
        else:
            try:
                r = measure_isolated(name, args.n)
            except RuntimeError as e:
                failed[name] = str(e)
                print(f"{name:22s} failed: {e}")
                continue
        rows.append(r)
        print(f"{name:22s} {r['input']:5d} {r['structures']:10d} {r['removed']:7d} "
              f"{r['max_output_change']:12.2e} {r['max_output']:11.3f} {r['macs_ratio']:9.3f}")
    result = benchmark_record("zoo", "cpu", N=args.n, models=rows,
                              **({"failed": failed} if args.isolate else {}))
    if args.json:
        print(f"wrote {write_record(result, args.json)}")
    return result


if __name__ == "__main__":
    main()
