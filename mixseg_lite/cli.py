"""The ``mixseg-lite`` command line: run, build and check notebooks; student copies; demo, sweep and report.

Examples::

    mixseg-lite run notebooks/02_kl_distillation.py -p epochs 3 -o runs/try
    mixseg-lite build                      # re-execute every notebooks/NN_*.py into its twin
    mixseg-lite check                      # exit 1 when a twin is out of sync with its source
    mixseg-lite student                    # course/student/NN_*.ipynb: solutions replaced by todo("N.M")
    mixseg-lite student --check            # exit 1 when a student copy is missing or out of sync
    mixseg-lite student --run              # run each student copy: only its checks may fail ("not done")
    mixseg-lite demo                       # every notebook at defaults + a results table
    mixseg-lite sweep experiments/mixed_ablation_cardiac.yaml --workers 2
    mixseg-lite sweep experiments/mixed_ablation_cardiac.yaml --scheduler tcp://node17:8786
    mixseg-lite report runs/mixed_ablation_cardiac --csv results/mixed_ablation_cardiac.csv
    mixseg-lite report                     # docs/reproduction.md and the README's verdicts from results/
    mixseg-lite report --check             # exit 1 when those documents are out of sync with results/
    mixseg-lite replicate experiments/mixed_ablation_cardiac.yaml --seeds 100-104 --only recipe=ours

Also ``python -m mixseg_lite.cli ...``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

from mixseg_lite.errors import InputError
from mixseg_lite.notebooks import NotebookExecutionError

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


def _command_run(args: argparse.Namespace) -> int:
    from mixseg_lite.notebooks import execute_notebook, parse_parameter_value
    from mixseg_lite.report import read_run, rows_markdown

    notebook = Path(args.notebook)
    out = Path(args.out) if args.out else Path("runs") / notebook.stem
    parameters = {name: parse_parameter_value(value) for name, value in args.parameter or []}
    executed = execute_notebook(notebook, out, parameters=parameters, parameter_file=args.file,
                                progress=True)
    print(f"executed notebook: {executed}")
    if (out / "metrics.json").is_file():
        print(rows_markdown([read_run(out / "metrics.json")]))
    return EXIT_OK


def _selected_notebooks(names: Sequence[str] | None) -> list[Path]:
    from mixseg_lite.notebooks import list_notebooks

    notebooks = [Path(name) for name in names] if names else list_notebooks()
    if not notebooks:
        raise InputError("no notebooks/NN_*.py sources found (run from the project root)")
    return notebooks


def _command_build(args: argparse.Namespace) -> int:
    from mixseg_lite.notebooks import build_twin

    failures = 0
    for source in _selected_notebooks(args.notebooks):
        started = time.perf_counter()
        try:
            twin = build_twin(source, progress=True)
            print(f"{source} -> {twin}  ({time.perf_counter() - started:.1f} s)")
        except NotebookExecutionError as error:
            failures += 1
            print(f"FAILED {error}  ({time.perf_counter() - started:.1f} s)", file=sys.stderr)
    return EXIT_FAILED if failures else EXIT_OK


def _command_check(args: argparse.Namespace) -> int:
    from mixseg_lite.notebooks import check_twin

    sources = _selected_notebooks(args.notebooks)
    problems = [problem for source in sources for problem in check_twin(source)]
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} problem(s); rebuild with `mixseg-lite build`", file=sys.stderr)
        return EXIT_FAILED
    print(f"all {len(sources)} notebook twins are in sync with their sources")
    return EXIT_OK


def _command_student(args: argparse.Namespace) -> int:
    from mixseg_lite.student import (has_exercises, orphan_student_copies, student_copy_problems,
                                     write_student_copy)

    sources = _selected_notebooks(args.notebooks)
    with_exercises = [source for source in sources if has_exercises(source)]
    none = "none of these notebooks has exercises" if args.notebooks else "no notebook has exercises yet"
    if args.run:
        return _run_student_copies(with_exercises, none)
    orphans = [] if args.notebooks else orphan_student_copies()
    if args.check:
        problems = [problem for source in with_exercises for problem in student_copy_problems(source)]
        problems += [f"{path}: its source has no exercises any more; `mixseg-lite student` removes it"
                     for path in orphans]
        for problem in problems:
            print(problem)
        if problems:
            print(f"{len(problems)} problem(s); regenerate with `mixseg-lite student`", file=sys.stderr)
            return EXIT_FAILED
        print(f"all {len(with_exercises)} student copies are in sync with their sources" if with_exercises
              else f"{none}: no student copy to check")
        return EXIT_OK
    for source in with_exercises:
        print(f"{source} -> {write_student_copy(source)}")
    for path in orphans:
        path.unlink()
        print(f"removed {path}: its source has no exercises any more")
    if not with_exercises:
        print(f"{none}: no student copy written")
    return EXIT_OK


def _run_student_copies(sources: list[Path], none: str) -> int:
    """Execute each student copy up to its last check; every check must fail "not done"."""
    from mixseg_lite.student import run_student_copy, student_path, student_run_problems

    failures = 0
    for source in sources:
        path = student_path(source)
        if not path.is_file():
            raise InputError(f"{path}: missing; run `mixseg-lite student` first")
        started = time.perf_counter()
        outcomes = run_student_copy(path)
        problems = student_run_problems(outcomes, str(path))
        for problem in problems:
            print(problem, file=sys.stderr)
        failures += bool(problems)
        checks = sum(outcome.kind == "check" for outcome in outcomes)
        print(f"{path}: {'FAILED' if problems else 'ok'}: {checks} checks say 'not done', "
              f"{len(outcomes) - checks} other cells ran up to the last check "
              f"({time.perf_counter() - started:.1f} s)")
    if not sources:
        print(f"{none}: no student copy to run")
    return EXIT_FAILED if failures else EXIT_OK


def _command_demo(args: argparse.Namespace) -> int:
    from mixseg_lite.hardware import machine_summary
    from mixseg_lite.notebooks import execute_notebook
    from mixseg_lite.report import read_runs, rows_markdown

    out = Path(args.out)
    # Training numbers depend on the CPU's instruction sets and the thread count: say which.
    machine = f"machine: {machine_summary()} (each notebook sets its own thread count; see metrics.json)"
    print(machine)
    failures = 0
    for source in _selected_notebooks(args.notebooks):
        started = time.perf_counter()
        try:
            execute_notebook(source, out / source.stem, progress=True)
            print(f"{source}: done in {time.perf_counter() - started:.1f} s")
        except NotebookExecutionError as error:
            failures += 1
            print(f"FAILED {error}", file=sys.stderr)
    if any(out.rglob("metrics.json")):
        # One short table per notebook, with its own columns (a notebook's rows share few columns
        # with another's).
        runs = read_runs(out)
        table = "\n".join(f"{notebook}\n\n" + rows_markdown([run for run in runs if run.notebook == notebook])
                          for notebook in dict.fromkeys(run.notebook for run in runs))
        (out / "results.md").write_text(f"{table}\n{machine}\n", encoding="utf-8")
        print(table)
        print(machine)
        print(f"table written to {out / 'results.md'}")
    return EXIT_FAILED if failures else EXIT_OK


def _parse_only(items: list[str] | None) -> dict[str, str]:
    """``["recipe=ours", ...]`` -> ``{"recipe": "ours"}``; a one-line error on a malformed item."""
    only = {}
    for item in items or []:
        key, equals, value = item.partition("=")
        if not equals or not key:
            raise InputError(f"--only {item!r}: expected KEY=VALUE, e.g. recipe=ours")
        only[key] = value
    return only


def _command_sweep(args: argparse.Namespace) -> int:
    from mixseg_lite.replicate import parse_seeds
    from mixseg_lite.sweep import run_sweep

    only = _parse_only(args.only)

    def keep(fixed: dict, parameter_set: dict) -> dict | None:
        params = {**fixed, **parameter_set}  # a key the file never sets does not match
        return parameter_set if all("" if params.get(k) is None else str(params.get(k)) == v
                                    for k, v in only.items()) else None

    summary = run_sweep(args.sweep_file, workers=args.workers, force=args.force, scheduler=args.scheduler,
                        out=args.out, seeds=parse_seeds(args.seeds) if args.seeds else None,
                        keep=keep if only else None)
    print(summary)
    return EXIT_OK if summary.ok else EXIT_FAILED


def _command_report(args: argparse.Namespace) -> int:
    from mixseg_lite.report import write_report

    if args.rundir is None:
        return _command_reproduction(args)
    if args.check:
        raise InputError("--check compares the documents generated from results/; give no run folder")
    paths = write_report(args.rundir, csv_copy=args.csv)
    print(paths["markdown"].read_text(encoding="utf-8"))
    print("written: " + ", ".join(str(path) for path in paths.values()))
    return EXIT_OK


def _command_replicate(args: argparse.Namespace) -> int:
    """Rerun a sweep's claims on fresh seeds; print committed and fresh verdicts side by side."""
    import yaml

    from mixseg_lite.claims import CLAIMS_BY_NOTEBOOK
    from mixseg_lite.replicate import parse_seeds, replicate
    from mixseg_lite.results import format_table

    only = _parse_only(args.only)
    path = Path(args.sweep_file)
    spec = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
    if not isinstance(spec, dict):
        raise InputError(f"{path}: no such sweep file")
    notebooks = spec.get("notebooks") or [spec.get("notebook")]
    claims = [claim for notebook in notebooks for claim in CLAIMS_BY_NOTEBOOK.get(Path(str(notebook)).stem, [])]
    if not claims:
        raise InputError(f"{path}: its notebook has no claim set in mixseg_lite.claims")
    summary, replications = replicate(path, parse_seeds(args.seeds), claims, workers=args.workers, out=args.out,
                                      only=only, verdicts=args.verdicts)
    if summary is not None:
        print(summary)
    if not replications:
        print("no committed claim matches; nothing to replicate")
        return EXIT_OK
    rows = [replication.as_row() for replication in replications]
    table = format_table(rows, list(rows[0]))
    print(table)
    contradicted = [r for r in replications if r.outcome == "contradicts"]
    undecided = [r for r in replications if r.outcome == "undecided"]
    print(f"{sum(r.outcome == 'same' for r in replications)} of {len(replications)} claims give the same verdict on "
          f"the fresh seeds; contradicted: {', '.join(f'{r.claim} ({r.condition})' for r in contradicted) or 'none'}; "
          f"not resolved on the fresh seeds: {', '.join(f'{r.claim} ({r.condition})' for r in undecided) or 'none'}")
    return EXIT_FAILED if summary is not None and not summary.ok else EXIT_OK


def _command_reproduction(args: argparse.Namespace) -> int:
    """The documents written from ``results/``: write them, or with ``--check`` say which are stale."""
    from mixseg_lite import reproduction

    if args.csv:
        raise InputError("--csv copies a run folder's results.csv; give the run folder")
    if args.check:
        stale = reproduction.stale_documents()
        for path in stale:
            print(f"out of sync with results/: {path} (run `mixseg-lite report`)", file=sys.stderr)
        if not stale:
            print("docs/reproduction.md, results/README.md and the README's verdicts are in sync with results/")
        return EXIT_FAILED if stale else EXIT_OK
    changed = reproduction.write_documents()
    print("written: " + ", ".join(str(path) for path in changed) if changed else "up to date: nothing changed")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``mixseg-lite`` with its subcommands."""
    parser = argparse.ArgumentParser(
        prog="mixseg-lite", description="Execute, check and sweep the mixseg-lite notebooks.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="execute one notebook with parameters")
    run.add_argument("notebook", help="a notebooks/NN_name.py source (or an .ipynb)")
    run.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"),
                     help="set a parameter; VALUE is read as YAML (3 -> int, true -> bool)")
    run.add_argument("-f", "--file", help="YAML file of parameters (-p values override it)")
    run.add_argument("-o", "--out", help="output folder (default: runs/<notebook stem>)")
    run.set_defaults(handler=_command_run)

    build = commands.add_parser("build", help="re-execute sources into their committed twins")
    build.add_argument("notebooks", nargs="*", help="sources (default: notebooks/NN_*.py)")
    build.set_defaults(handler=_command_build)

    check = commands.add_parser("check", help="fail when a twin is out of sync with its source")
    check.add_argument("notebooks", nargs="*", help="sources (default: notebooks/NN_*.py)")
    check.set_defaults(handler=_command_check)

    student = commands.add_parser("student", help="write course/student/NN_*.ipynb: exercises without solutions")
    student.add_argument("notebooks", nargs="*", help="sources (default: notebooks/NN_*.py with exercises)")
    student.add_argument("--check", action="store_true",
                         help="write nothing; exit 1 when a student copy is missing or out of sync")
    student.add_argument("--run", action="store_true",
                         help="execute each student copy up to its last check: exit 1 unless every check "
                              "says 'not done' and every other cell runs")
    student.set_defaults(handler=_command_student)

    demo = commands.add_parser("demo", help="every notebook at defaults, then a results table")
    demo.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    demo.add_argument("--notebooks", nargs="+", help="sources (default: notebooks/NN_*.py)")
    demo.set_defaults(handler=_command_demo)

    sweep = commands.add_parser("sweep", help="execute the runs of a sweep file (resumable)")
    sweep.add_argument("sweep_file", help="YAML sweep file (see mixseg_lite.sweep)")
    sweep.add_argument("--workers", type=int, default=1,
                       help="parallel notebook processes on this machine (default: 1)")
    sweep.add_argument("--force", action="store_true", help="re-execute finished runs too")
    sweep.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                       help="run on this Dask scheduler instead (needs mixseg-lite[distributed])")
    sweep.add_argument("--out", help="output folder (default: the sweep file's 'out')")
    sweep.add_argument("--seeds", help="seeds in place of the file's, e.g. 5-9 (to extend a committed sweep)")
    sweep.add_argument("--only", nargs="+", metavar="KEY=VALUE",
                       help="only the runs whose parameters match, e.g. recipe=ours")
    sweep.set_defaults(handler=_command_sweep)

    report = commands.add_parser("report", help="results.csv/.md/.png from a run folder; without one, "
                                 "docs/reproduction.md and the README's verdicts from results/")
    report.add_argument("rundir", nargs="?", help="folder holding metrics.json files (a sweep, a demo); "
                        "omit it to write the documents generated from results/")
    report.add_argument("--csv", help="also write results.csv here (e.g. results/<sweep>.csv)")
    report.add_argument("--check", action="store_true",
                        help="without a run folder: exit 1 when a generated document is out of sync with results/")
    report.set_defaults(handler=_command_report)

    replicate = commands.add_parser("replicate", help="rerun a sweep's claims on fresh seeds and compare verdicts")
    replicate.add_argument("sweep_file", help="the sweep file of a committed results/<name>.csv")
    replicate.add_argument("--seeds", required=True, help="fresh seeds, e.g. 100-104 (none of the committed ones)")
    replicate.add_argument("--only", nargs="+", metavar="KEY=VALUE", help="only these conditions, e.g. recipe=ours")
    replicate.add_argument("--verdicts", nargs="+", metavar="VERDICT",
                           help='only claims whose committed verdict starts so, e.g. holds "no effect"')
    replicate.add_argument("--workers", type=int, default=1, help="notebooks run in parallel (default 1)")
    replicate.add_argument("--out", help="run folder (default: runs/replicate/<sweep name>)")
    replicate.set_defaults(handler=_command_replicate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``mixseg-lite`` with ``argv`` (default: the command line); return the exit status.

    0 on success, 1 when a notebook or run failed, 2 for bad input (one line on stderr).
    """
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except InputError as error:
        print(f"mixseg-lite {args.command}: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"mixseg-lite {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except NotebookExecutionError as error:  # one readable line; the notebook is kept
        print(f"mixseg-lite {args.command}: {error}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
