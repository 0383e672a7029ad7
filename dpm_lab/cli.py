"""Command line: ``python -m dpm_lab train|run|sweep|report|download``.

Every option is documented in ``--help``. A bad value exits with status 2 and one line naming the
value and what is allowed.
"""
from __future__ import annotations

import argparse
import sys

from .config import PROFILE_NAMES, get_profile
from .data import DATASET_NAMES, DatasetNotFoundError
from .models import MODEL_NAMES
from .pruning import CRITERIA
from .hosts import HOSTS
from .pruning.rectify import RULES


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= 1") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= 1")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number in (0, 1]") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number in (0, 1]")
    return value


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", choices=PROFILE_NAMES, default=None,
                   help="smoke (seconds), mini (minutes on CPU) or paper (published recipe, GPU); "
                        "default: $DPM_LAB_PROFILE, else mini")
    p.add_argument("--model", choices=MODEL_NAMES, default=None, help="override the profile's model")
    p.add_argument("--data", choices=DATASET_NAMES, default=None,
                   help="override the profile's dataset")
    p.add_argument("--data-root", default=None,
                   help="folder holding the dataset (default: $DPM_LAB_DATA, data/, ../shared/data)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--epochs", type=_positive_int, default=None,
                   help="override the profile's epochs (dense for train, fine-tune for run)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--results-dir", default=None, help="where records go (default: results/)")
    p.add_argument("--runs-dir", default=None, help="where checkpoints go (default: runs/)")
    p.add_argument("--no-figure", action="store_true", help="do not write the training-curve figure")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m dpm_lab", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = sub.add_parser("train", help="train a dense model; write checkpoint, record and figure")
    _common(train)

    run = sub.add_parser("run", help="dense (reused) -> prune with a method -> fine-tune -> record")
    _common(run)
    run.add_argument("--host", choices=("core",) + HOSTS, default="core",
                     help="core: DPM's own selection (default); depgraph: Torch-Pruning group_sl; "
                          "otov2: DHSPG")
    run.add_argument("--method", choices=("single-step", "host", "sp", "dpm"), default="dpm",
                     help="single-step baseline (core) or host (a host's own one-step pruning); "
                          "sp: Smooth Pruning; dpm: SP + Self-Rectifying")
    run.add_argument("--no-sl", action="store_true",
                     help="depgraph: skip sparse learning (the 'w/o SL' variant)")
    run.add_argument("--speedup", type=float, default=None,
                     help="depgraph: MACs speed-up target (default: the recipe's, 2.0 mini, 2.11 paper)")
    run.add_argument("--target-sparsity", type=float, default=None,
                     help="otov2: target group sparsity in (0, 1) (default: the recipe's)")
    run.add_argument("--target-macs", type=_fraction, default=None,
                     help="fraction of dense MACs to keep, e.g. 0.5 (default 0.5)")
    run.add_argument("--channel-ratio", type=float, default=None,
                     help="instead of --target-macs: fraction of every group's channels to remove")
    run.add_argument("--criterion", choices=CRITERIA, default="l2", help="importance criterion")
    run.add_argument("--decay-steps", type=_positive_int, default=None,
                     help="N, optimiser steps for a selected channel to decay to zero "
                          "(default: the profile's)")
    run.add_argument("--prune-phase", type=_fraction, default=0.5,
                     help="fraction of fine-tuning during which selection rounds run (default 0.5)")
    run.add_argument("--t-rate", type=float, default=0.5, help="SR threshold on C_rate (default 0.5)")
    run.add_argument("--t-len", type=float, default=1.0, help="SR threshold on C_len (default 1.0)")
    run.add_argument("--rule", choices=RULES, default="all", help="SR release rule (default all)")

    sweep = sub.add_parser("sweep", help="every method x MACs target x seed, resumable")
    _common(sweep)
    sweep.add_argument("--methods", nargs="+", choices=("single-step", "sp", "dpm"),
                       default=["single-step", "sp", "dpm"], help="methods to compare")
    sweep.add_argument("--targets", nargs="+", type=_fraction, default=[0.5, 0.25, 0.1],
                       help="MACs fractions to keep (default 0.5 0.25 0.1)")
    sweep.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds (default 0 1 2)")

    report = sub.add_parser("report", help="tables and accuracy-vs-MACs figures from the recorded "
                                           "results of a profile (core methods and each host)")
    report.add_argument("--profile", choices=PROFILE_NAMES, default="mini",
                        help="whose records (default mini)")
    report.add_argument("--results-dir", default=None, help="where records are (default: results/)")
    report.add_argument("--out", default=None, help="folder for the figures (default: figures/)")

    download = sub.add_parser("download", help="download CIFAR-10/100 with torchvision into --data-root")
    download.add_argument("dataset", choices=("cifar10", "cifar100"))
    download.add_argument("--data-root", default=None, help="target folder (default: data/)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except (ValueError, DatasetNotFoundError) as err:
        print(f"python -m dpm_lab: error: {err}", file=sys.stderr)
        return 2


def _dispatch(args) -> int:
    from . import experiments, figures
    from .data import load_dataset

    if args.command == "download":
        load_dataset(args.dataset, root=args.data_root, download=True)
        print(f"{args.dataset} ready")
        return 0
    if args.command == "report":
        found = figures.report(args.profile, args.results_dir, args.out)
        if not found:
            raise ValueError(f"no {args.profile}-profile records under "
                             f"{args.results_dir or 'results/'}; run `sweep` or `run` first")
        for name, table, path in found:
            print(f"== {name} ({args.profile}): mean ± std over seeds; figure {path}")
            print(table.round(3).to_string(index=False))
        return 0
    if args.command == "run":
        _check_run_options(args)
    profile = get_profile(args.profile)
    changes = {k: v for k, v in (("model", args.model), ("dataset", args.data)) if v is not None}
    phase = "dense" if args.command == "train" else "finetune"
    if args.epochs is not None:
        changes[phase] = getattr(profile, phase).__class__(
            **{**vars(getattr(profile, phase)), "epochs": args.epochs, "milestones": ()})
    profile = profile.with_(**changes)
    dirs = {k: v for k, v in (("results_dir", args.results_dir), ("runs_dir", args.runs_dir)) if v}
    if args.command == "train":
        _, record = experiments.train_dense(profile, args.seed, device=args.device,
                                            data_root=args.data_root, **dirs)
    elif args.command == "sweep":
        records = experiments.sweep(args.methods, args.targets, args.seeds, profile,
                                    device=args.device, data_root=args.data_root, **dirs)
        print(figures.summarize(figures.records_frame(records)).to_string(index=False))
        return 0
    elif args.host != "core":
        record = experiments.run_host(
            args.host, args.method, profile, args.seed, sparse_learning=not args.no_sl,
            speedup=args.speedup, target_sparsity=args.target_sparsity, model=args.model,
            decay_steps=args.decay_steps, t_rate=args.t_rate, t_len=args.t_len, rule=args.rule,
            device=args.device, data_root=args.data_root, **dirs)
    else:
        target_macs = args.target_macs
        if target_macs is None and args.channel_ratio is None:
            target_macs = 0.5
        record = experiments.run_pruning(
            args.method, profile, args.seed, target_macs=target_macs,
            channel_ratio=args.channel_ratio, criterion=args.criterion,
            decay_steps=args.decay_steps, prune_phase=args.prune_phase, t_rate=args.t_rate,
            t_len=args.t_len, rule=args.rule, device=args.device, data_root=args.data_root, **dirs)
    print(f"{record['kind']} {record['model']} on {record['dataset']} ({record['profile']}, seed "
          f"{record['seed']}): final top-1 {record['final_top1']:.2f}% (best {record['best_top1']:.2f}%),"
          f" {record['macs'] / 1e6:.2f} M MACs, {record['params'] / 1e6:.3f} M params")
    if not args.no_figure:
        path = figures.training_curve(record)
        print(f"figure: {path}")
    return 0


def _check_run_options(args) -> None:
    """Reject option combinations that mix the core pipeline and the hosts (before any work)."""
    if args.host == "core":
        if args.method == "host":
            raise ValueError("--method host needs --host depgraph or --host otov2")
        return
    if args.method == "single-step":
        raise ValueError(f"--method single-step is the core baseline; with --host "
                         f"{args.host} choose one of: host, sp, dpm")
    if args.target_macs is not None or args.channel_ratio is not None:
        raise ValueError("--target-macs/--channel-ratio are core options; hosts take "
                         "--speedup (depgraph) or --target-sparsity (otov2)")
    if args.speedup is not None and args.speedup <= 1:
        raise ValueError(f"--speedup must be > 1, got {args.speedup}")
    if args.target_sparsity is not None and not 0 < args.target_sparsity < 1:
        raise ValueError(f"--target-sparsity must be in (0, 1), got {args.target_sparsity}")
