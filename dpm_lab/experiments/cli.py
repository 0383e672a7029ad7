"""Command line: ``python -m dpm_lab train|run|sweep|report|figures|main-job|download``.

``run`` and ``sweep`` share one option table (:mod:`.options`, with each host's options from its
folder), each option a field of :class:`dpm_lab.experiments.runspec.RunSpec`; in ``sweep`` every
option takes one or more values and the grid is their Cartesian product. An option that does not
apply to the chosen host or method is refused with one line saying why (``run``), or left out of the
grid points it does not apply to, with a note (``sweep``). Every other bad value exits with status 2
and one line naming the value and what is allowed, as does a state of the user's files the package
detects (:class:`dpm_lab.errors.DpmLabError`); ``--debug`` (before the command) adds their
traceback. Any other exception (a bug, CUDA out of memory, a Torch-Pruning internal) is not bad
input and always shows its traceback.

A bare ``python -m dpm_lab`` prints the usage and the list of commands and exits with status 0:
asking what the commands are is not an error. A mistyped option is refused with the closest
known option of its command ("did you mean --t-rate?").

``run`` and ``sweep`` also take an experiment file (``configs/``, see
:mod:`dpm_lab.experiments.experiment_file`): its fields are the same options, a list being a grid
axis, and options given beside the file replace the file's values of those fields. ``run`` builds
the file's grid by the sweep's rules and refuses a file that expands to more than one run.
"""
from __future__ import annotations

import argparse
import difflib
import sys
import textwrap
import traceback
from dataclasses import replace
from pathlib import Path

from ..errors import DpmLabError
from ..hosts import REGISTRY
from ..training import distributed
from ..training.data import DatasetNotFoundError
from .host import RECIPE_FIELDS
from .option_types import integer, positive_int
from .options import OPTION_GROUPS, RUN_OPTIONS, TRAIN_FIELDS
from .profiles import PROFILE_NAMES, get_profile
from .runspec import RunSpec


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message
        self.exit(2, f"{self.prog}: error: {message}\n")

    def parse_args(self, args=None, namespace=None):
        """As argparse's, but an unknown option is refused with the closest known option of
        its command (argparse before Python 3.14 names none)."""
        parsed, unknown = self.parse_known_args(args, namespace)
        if unknown:
            self.error(f"unrecognized arguments: {' '.join(unknown)}"
                       + _did_you_mean(self, getattr(parsed, "command", None), unknown))
        return parsed


def _did_you_mean(parser: argparse.ArgumentParser, command: str | None, unknown) -> str:
    """"; did you mean --t-rate?" for each unknown option that is close to one of ``command``'s
    options (``parser``'s own where there is no command)."""
    commands = next((a.choices for a in parser._actions
                     if isinstance(a, argparse._SubParsersAction)), {})
    known = [o for a in commands.get(command, parser)._actions for o in a.option_strings]
    hints = {}
    for arg in unknown:
        name = arg.split("=", 1)[0]
        close = difflib.get_close_matches(name, known, n=1) if name.startswith("-") else []
        if close:
            hints[name] = close[0]
    if len(hints) == 1:
        return f"; did you mean {next(iter(hints.values()))}?"
    return ("; did you mean " + ", ".join(f"{o} for {n}" for n, o in hints.items()) + "?"
            if hints else "")


RUN_EXAMPLES = """examples:
  python -m dpm_lab run --profile smoke --method dpm
  python -m dpm_lab run --method sp --target-macs 0.25 --seed 1
  python -m dpm_lab run --host depgraph --method dpm --no-sl
  python -m dpm_lab run --host otov2 --method dpm --lasso-while-decaying off
  python -m dpm_lab run configs/mini/core_comparison.toml --method dpm --seed 0 --target-macs 0.5
"""
SWEEP_EXAMPLES = """examples:
  python -m dpm_lab sweep --profile smoke --method sp dpm --seed 0 1
  python -m dpm_lab sweep --method dpm --t-rate 0.25 0.5 1 --workers 2
  python -m dpm_lab sweep configs/mini/core_comparison.toml
  python -m dpm_lab sweep configs/ablations/window.toml --cluster slurm --partition gpu
"""


def _run_options(p: argparse.ArgumentParser, **extra) -> dict:
    """RUN_OPTIONS on ``p`` (``run`` or ``sweep``), in the argument groups of OPTION_GROUPS;
    returns the groups by title."""
    groups = {title: p.add_argument_group(title, text)
              for title, (text, _) in OPTION_GROUPS.items()}
    where = {dest: groups[title] for title, (_, dests) in OPTION_GROUPS.items() for dest in dests}
    common = groups["common options"]
    _places(common)
    for flags, dest, kw in RUN_OPTIONS:
        where.get(dest, common).add_argument(*flags, dest=dest, default=None, **kw, **extra)
    return groups


def _places(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", choices=PROFILE_NAMES, default=None,
                   help="smoke (seconds), mini (minutes on CPU), full (all of CIFAR-10, hours on "
                        "CPU) or paper (published recipe, GPU); default: $DPM_LAB_PROFILE, else "
                        "mini")
    p.add_argument("--data-root", default=None,
                   help="folder holding the dataset (default: $DPM_LAB_DATA, ./data, then data/ "
                        "and shared/data/ in the working directory's parents)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--results-dir", default=None,
                   help="where records go (default: $DPM_LAB_HOME/results, else ./results)")
    p.add_argument("--runs-dir", default=None,
                   help="where checkpoints go (default: $DPM_LAB_HOME/runs, else ./runs)")


def _experiment_file(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", nargs="?", default=None,
                   help="an experiment file (TOML, see configs/README.md), given first; options "
                        "given beside it replace the file's values of those fields")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m dpm_lab",
                     description="The DPM pruning lab: train dense models, prune them (run, "
                                 "sweep, main-job), and read the records back (report, figures).",
                     epilog="python -m dpm_lab COMMAND --help lists a command's options.")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of bad-input errors too (given before the "
                             "command); unexpected errors always show theirs")
    sub = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND",
                                parser_class=_Parser)

    train = sub.add_parser("train", help="train a dense model; write checkpoint, record and figure")
    _places(train)
    for flags, dest, kw in RUN_OPTIONS:  # the options that shape a dense run, same table
        if dest in TRAIN_FIELDS:
            text = ("dense epochs (default: the profile's); milestones scale with it"
                    if dest == "epochs" else kw["help"].replace("pruning phase", "dense run"))
            train.add_argument(*flags[:1], dest=dest, default=None, **{**kw, "help": text})
    train.add_argument("--no-figure", action="store_true", help="do not draw the training curve")

    text = "dense (reused) -> prune with a method -> train -> record"
    run = sub.add_parser("run", help=text, description=text, epilog=RUN_EXAMPLES,
                         usage="%(prog)s [file] [options]",
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    _experiment_file(run)
    groups = _run_options(run)
    groups["DepGraph (--host depgraph)"].add_argument(
        "--no-sl", dest="sparse_learning", action="store_const", const=False,
        help="depgraph: skip sparse learning (same as --sparse-learning off)")
    groups["common options"].add_argument("--no-figure", action="store_true",
                                          help="do not draw the training curve")

    text = "every combination of the given values, resumable: finished runs are read back"
    sweep = sub.add_parser("sweep", help=text, description=text + "; every option takes one or "
                           "more values", epilog=SWEEP_EXAMPLES,
                           usage="%(prog)s [file] [options]",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    _experiment_file(sweep)
    _run_options(sweep, nargs="+")
    sweep = sweep.add_argument_group("running the grid")
    sweep.add_argument("--workers", type=positive_int, default=1,
                       help="processes running grid points at once, claiming them through the "
                            "results folder (default 1)")
    sweep.add_argument("--cluster", choices=("slurm", "local"), default=None,
                       help="submit the grid points as jobs with submitit instead of running "
                            "them here: slurm (one array job, returns at once) or local "
                            "(processes on this machine; waits)")
    sweep.add_argument("--partition", default=None, help="slurm: the partition")
    sweep.add_argument("--timeout-min", type=positive_int, default=600,
                       help="slurm: time limit of one run in minutes (default 600)")
    sweep.add_argument("--gpus", type=int, default=1, help="slurm: GPUs per run (default 1)")

    report = sub.add_parser("report", help="tables and accuracy-vs-MACs figures from the "
                                           "recorded results of a profile")
    report.add_argument("--profile", choices=PROFILE_NAMES, default="mini",
                        help="whose records (default mini)")
    report.add_argument("--results-dir", default=None,
                        help="where records are (default: $DPM_LAB_HOME/results)")
    report.add_argument("--reference", action="store_true",
                        help="read the repository's committed reference records instead")
    report.add_argument("--out", default=None,
                        help="folder for the figures (default: $DPM_LAB_HOME/figures)")

    figs = sub.add_parser("figures", help="draw every committed figure again from the reference "
                                          "records and the paper CSV (no training)")
    figs.add_argument("--profile", choices=PROFILE_NAMES, nargs="+", default=None,
                      help="whose records (default: mini and full, each where it has records)")
    figs.add_argument("--results-dir", default=None,
                      help="records to draw from (default: the repository's results/reference)")
    figs.add_argument("--out", default=None,
                      help="folder for the figures (default: $DPM_LAB_HOME/figures, else "
                           "./figures; with --reference, the repository's figures/reference)")
    figs.add_argument("--reference", action="store_true",
                      help="redraw the committed reference figures in the repository's "
                           "figures/reference (tracked files), instead of ./figures")

    main_job = sub.add_parser("main-job", help="the main job (make train): the dense model "
                                               "(trained or reused) pruned with DPM to 0.5x MACs; "
                                               "prints what was kept")
    _places(main_job)
    main_job.add_argument("--seed", type=integer, default=0, help="random seed (default 0)")
    main_job.add_argument("--no-figure", action="store_true",
                          help="do not draw the accuracy through fine-tuning")

    download = sub.add_parser("download", help="download CIFAR-10/100 with torchvision, or build "
                                               "the CIFAR-10 slice from its official batches")
    download.add_argument("dataset", choices=("cifar10", "cifar100", "cifar10-slice"))
    download.add_argument("--data-root", default=None,
                          help="target folder (default: $DPM_LAB_DATA, else ./data)")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # a bare `python -m dpm_lab`: how to use it, not an error
        parser.print_help()
        return 0
    # under torchrun: one DDP process group for train/run/sweep (a no-op in a single process)
    launched = args.command in ("train", "run", "sweep") and distributed.init_from_env()
    try:
        return _dispatch(args)
    except (ValueError, DpmLabError, DatasetNotFoundError) as err:  # bad input: one line
        if args.debug:
            traceback.print_exc()
        print(f"python -m dpm_lab: error: {err}", file=sys.stderr)
        return 2
    finally:
        if launched:
            distributed.shutdown()


def _spec_fields(args) -> dict:
    return {dest: getattr(args, dest) for _, dest, _ in RUN_OPTIONS
            if getattr(args, dest) is not None}


def _dispatch(args) -> int:
    from . import runner
    from ..reporting import figures
    from ..training.data import load_dataset

    if args.command == "download":
        if args.dataset == "cifar10-slice":
            from ..training.data import download_cifar10_slice
            print(f"cifar10-slice ready: {download_cifar10_slice(args.data_root)}")
            return 0
        load_dataset(args.dataset, root=args.data_root, download=True)
        print(f"{args.dataset} ready")
        return 0
    if args.command == "report":
        return _report(args)
    if args.command == "figures":
        return _figures(args)
    dirs = {k: v for k, v in (("results_dir", args.results_dir), ("runs_dir", args.runs_dir)) if v}
    common = dict(device=args.device, data_root=args.data_root, **dirs)
    if args.command == "main-job":
        return _main_job(args, common)
    if args.command == "sweep":
        specs = _grid_of(args.file, _given_axes(args), sweep=True)
        if args.cluster:
            return _submit(args, specs, common)
        records = runner.sweep(specs, workers=args.workers, **common)
        if not distributed.is_main():
            return 0
        import pandas as pd
        print(figures.summarize(pd.DataFrame(records)).to_string(index=False))
        return 0
    if args.command == "train":
        profile = get_profile(args.profile)
        changes = {k: v for k, v in (("model", args.model), ("dataset", args.dataset),
                                     ("val_fraction", args.val_fraction),
                                     ("precision", args.precision)) if v is not None}
        dense = profile.dense if args.epochs is None else profile.dense.with_epochs(args.epochs)
        recipe = {k: getattr(args, k) for k in RECIPE_FIELDS if getattr(args, k) is not None}
        changes["dense"] = replace(dense, **recipe)
        seed = 0 if args.seed is None else args.seed
        _, record = runner.train_dense(profile.with_(**changes), seed, **common)
    else:
        record = runner.run(_run_spec(args), **common)
    if not distributed.is_main():  # rank 0 reports and draws
        return 0
    val = "" if record.get("final_val") is None else f", validation {record['final_val']:.2f}%"
    print(f"{record['kind']} {record['model']} on {record['dataset']} ({record['profile']}, seed "
          f"{record['seed']}, run {record['run_id']}): final top-1 {record['final_top1']:.2f}% "
          f"(best {record['best_top1']:.2f}%){val}, {record['macs'] / 1e6:.2f} M MACs, "
          f"{record['params'] / 1e6:.3f} M params")
    if not args.no_figure:
        print(f"figure: {figures.training_curve(record)}")
    return 0


def _main_job(args, common) -> int:
    """``main-job``: the run, then its table, record and figure."""
    from .runner import run_paths
    from .main_job import format_summary, main_job, main_job_spec

    record, figure = main_job(args.profile, args.seed, figure=not args.no_figure, **common)
    record_path, _ = run_paths(main_job_spec(args.profile, args.seed),
                               common.get("results_dir"), common.get("runs_dir"))
    print(f"main job: {record['model']} on {record['dataset']} ({record['profile']}, seed "
          f"{record['seed']}, run {record['run_id']}): dense, then {record['method']} to "
          f"{record['macs_ratio']:.3f}x MACs")
    print(format_summary(record))
    print(f"record: {record_path}")
    if figure is not None:
        print(f"figure: {figure}")
    return 0


def _submit(args, specs, common) -> int:
    """``sweep --cluster``: the grid's unfinished points as submitit jobs."""
    import submitit

    from . import runner
    from ..training.paths import runs_dir

    folder = Path(args.runs_dir or runs_dir()) / "submitit"
    if args.cluster == "local":
        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(timeout_min=args.timeout_min)
    else:
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
        executor.update_parameters(timeout_min=args.timeout_min, gpus_per_node=args.gpus,
                                   tasks_per_node=1, slurm_partition=args.partition)
    jobs = runner.submit(specs, executor, **common)
    print(f"submitted {len(jobs)} of {len(specs)} runs ({len(specs) - len(jobs)} already "
          f"recorded) to {args.cluster}; job logs under {folder}")
    if args.cluster == "local":
        for job in jobs:
            job.result()  # raises with the job's traceback if a run failed
        print(f"all {len(jobs)} jobs finished")
    return 0


def _run_spec(args) -> RunSpec:
    """The one run of ``run``: from its options, or from an experiment file and the options
    given beside it, whose grid must then hold exactly one run."""
    if args.file is None:
        return RunSpec(profile=args.profile, **_spec_fields(args))
    axes = _given_axes(args)
    specs = _grid_of(args.file, axes, sweep=False)
    if len(specs) != 1:
        lists = [name for name, values in axes.items() if len(values) > 1]
        raise ValueError(f"{args.file} expands to {len(specs)} runs (lists: {', '.join(lists)}) "
                         "and run takes one: give one value of each list beside the file, "
                         "e.g. --seed 0, or use sweep")
    return specs[0]


def _given_axes(args) -> dict[str, list]:
    """Every run field given, each as a list of values: the experiment file's, if any, with the
    command line's values replacing the file's."""
    given = _spec_fields(args)
    if args.command == "run":
        given = {name: [value] for name, value in given.items()}
    if args.profile is not None:
        given["profile"] = [args.profile]
    if args.file is None:
        return given
    from .experiment_file import load_experiment

    return {**load_experiment(args.file), **given}


def _grid_of(file: str | None, axes: dict[str, list], sweep: bool) -> list[RunSpec]:
    """The grid of ``axes``; an error of one of its runs names the experiment file, if any."""
    try:
        return _sweep_specs(axes, sweep)
    except ValueError as err:
        if file is None:
            raise
        raise ValueError(f"{file}: {err}") from None


def _sweep_specs(axes: dict[str, list], sweep: bool) -> list[RunSpec]:
    """The grid of ``axes`` (field -> values). Unless given, methods default to every method of
    each host and seeds to 0 1 2 in a sweep, and to RunSpec's (dpm, seed 0) for ``run`` from a
    file. An option that does not apply to a grid point (an SR threshold for single-step, say)
    is left out of that point, with a note, and duplicates are merged."""
    from .runspec import grid, resolve

    axes = dict(axes)
    if sweep:
        axes.setdefault("seed", [0, 1, 2])
    hosts = axes.pop("host", ["core"])
    methods = axes.pop("method", None if sweep else [RunSpec.method])
    specs, seen, dropped = [], set(), set()
    for host in hosts:
        for method in methods or [m for e in REGISTRY.values() if e.host == host
                                  and e.in_default_sweep for m in e.methods]:
            for spec in grid(RunSpec(host=host, method=method), **axes):
                spec = _drop_inapplicable(spec, dropped)
                key = resolve(spec).run_id
                if key not in seen:
                    seen.add(key)
                    specs.append(spec)
    for host, method, name in sorted(dropped):
        print(f"note: --{name.replace('_', '-')} does not apply to --host {host} --method "
              f"{method}; those runs leave it out", file=sys.stderr)
    return specs


def _drop_inapplicable(spec: RunSpec, dropped: set) -> RunSpec:
    from .runspec import inapplicable

    refused = inapplicable(spec)
    clear = {n: None for n in refused if getattr(spec, n) is not None}
    dropped.update((spec.host, spec.method, n) for n in clear)
    return spec.replace(**clear)


def _figures(args) -> int:
    from ..reporting.paper_figures import REFERENCE_PROFILES, draw_all
    from ..training.paths import figures_dir, reference_dir

    source = Path(args.results_dir) if args.results_dir else reference_dir("results")
    # the committed figures are rewritten only when asked: by default a redraw goes where a
    # user's figures go, and a diff against figures/reference shows what changed
    out = Path(args.out) if args.out else (reference_dir("figures") if args.reference
                                           else figures_dir())
    if source is None or out is None:
        raise ValueError("no results/reference or figures/reference folder found from the "
                         "working directory upwards; run inside the repository or pass "
                         "--results-dir and --out")
    written, notes = [], []
    for profile in args.profile or REFERENCE_PROFILES:
        drawn, skipped = draw_all(source, out, profile)
        written, notes = written + drawn, notes + skipped
    for line in notes:
        print(f"note: {line}")
    print(f"{len(written)} files in {out}: " + ", ".join(sorted(p.name for p in written)))
    return 0


def _table(frame, digits: int = 3, pvalues=("p", "p_holm")) -> str:
    """A report table as printed: columns with no value in any row left out, a cell without a
    value (a knob that does not apply to the row's method) shown as "-", p-values to 4 digits."""
    from pandas.api.types import is_numeric_dtype

    frame = frame.dropna(axis=1, how="all")
    frame = frame.round(digits).assign(**{c: frame[c].round(4) for c in pvalues if c in frame})
    for c in [c for c in frame if not is_numeric_dtype(frame[c])]:  # None as well as NaN
        frame[c] = frame[c].astype(object).where(frame[c].notna(), "-")
    return frame.to_string(index=False, na_rep="-")


# the Self-Rectifying table's columns that report prints beside its knobs; the rest (revisions,
# spreads, family size) are in the tables above or in the heading
SR_COLUMNS = ("seeds", "dpm", "sp", "released", "release_events", "released_pct", "pruned_pct",
              "diff", "ci95_low", "ci95_high", "p", "p_holm", "holm_low", "holm_high", "claim")


def _report(args) -> int:
    from ..reporting import figures
    from ..training.paths import reference_dir, results_dir
    from ..reporting.stats import ALPHA

    source = args.results_dir
    if args.reference:
        source = reference_dir("results")
        if source is None:
            raise ValueError("no results/reference folder found from the working directory "
                             "upwards; run report inside the repository or pass --results-dir")
    where = (Path(source or results_dir()) / args.profile).resolve()
    found = figures.report(args.profile, source, args.out)
    if not found:
        raise ValueError(f"no {args.profile}-profile pruning records under {where}; run `sweep` "
                         "or `run` first")
    print(f"records: {where}")
    for name, table, path, notes, pairs, sr in found:
        figure = f"; figure {Path(path).resolve()}" if path else ""
        print(f"== {name} ({args.profile}): mean ± std over seeds{figure}")
        for line in notes:
            print(textwrap.fill(line, 100, initial_indent="   ", subsequent_indent="     "))
        print(_table(table))
        if not pairs.empty:
            print(f"-- {name}: paired differences of final top-1 over seeds; Holm within this "
                  f"table, family m = {pairs['m'].iloc[0]}: 95 % t-interval, paired t-test p, "
                  f"Holm-adjusted p and interval; claimed where p_holm < {ALPHA}")
            knobs = [c for c in pairs if c.endswith("_a") and not c.startswith("config_id")]
            cols = ["comparison", "target", *knobs, "seeds", "diff", "diff_std", "ci95_low",
                    "ci95_high", "p", "p_holm", "holm_low", "holm_high", "claim"]
            print(_table(figures.by_target(pairs.assign(method=pairs["comparison"]))[cols]))
        if not sr.empty:
            knobs = [c for c in sr if c in figures.describe_columns()]
            shown = [c for c in knobs if sr[c].nunique(dropna=False) > 1] or ["target"]
            same = ", ".join(f"{c}={sr[c].iloc[0]}" for c in knobs if c not in shown)
            family = (f"; Holm within this table, family m = {sr['m'].iloc[0]} at confidence "
                      f"{sr['holm_conf'].min():.3g}-{sr['holm_conf'].max():.3g}" if "m" in sr
                      else "")
            print(f"-- {name}: Self-Rectifying, each DPM setting paired with SP under its criterion "
                  "(validation top-1 where a split was held out; *_pct: mean dense-L2 percentile"
                  f"{family}); every row: {same}")
            print(_table(figures.by_target(sr)[shown + [c for c in SR_COLUMNS if c in sr]],
                         digits=2))
    return 0
