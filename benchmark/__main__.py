"""Command line: python -m benchmark {run,speed,parts,dataset,report,wandb-report} ... (--help on each)."""

import argparse
import os
import shlex
import sys
from pathlib import Path

from . import __doc__ as package_doc
from . import launch


def parser():
    p = argparse.ArgumentParser(prog="python -m benchmark", description=package_doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="launch the scripts: algos x env ids x seeds x frameworks",
                         description="Launch each run as its own process. Arguments after `--` pass through "
                                     "to every script, e.g. `-- --num-envs 8`.")
    run.add_argument("--algos", nargs="+", default=["ppo"], help="script stems, e.g. ppo dqn sac (default: ppo)")
    run.add_argument("--env-ids", nargs="+", default=["CartPole-v1"], help="gymnasium ids (default: CartPole-v1)")
    run.add_argument("--seeds", type=positive, default=3, help="run seeds 1..N (default: 3)")
    run.add_argument("--frameworks", nargs="+", choices=list(launch.SCRIPT_DIRS), default=list(launch.SCRIPT_DIRS),
                     help="default: mlx torch")
    run.add_argument("--total-timesteps", type=positive, required=True, help="budget of every run")
    run.add_argument("--runs-dir", type=Path, default=Path("runs"), help="where the runs go (default: runs)")
    run.add_argument("--workers", type=positive, default=1, help="runs in parallel, for return curves (default: 1)")
    run.add_argument("--timing-mode", action="store_true",
                     help="for speed: one run at a time, frameworks interleaved, thread counts fixed (--threads)")
    run.add_argument("--threads", type=positive, default=None,
                     help="OMP/OPENBLAS/MKL_NUM_THREADS for every run (default: the CPU count / workers with "
                          "--timing-mode or --workers > 1, else the scripts' own)")
    run.add_argument("--mlx-blas", choices=list(launch.BLAS_WORD), default=None,
                     help="BLAS of the MLX runs on Linux: openblas (cmeel-openblas, the scripts' default) or "
                          "reference (the mlx[cpu] wheel's own); recorded in summary.json")
    run.add_argument("--force", action="store_true", help="rerun runs that are already complete")
    run.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    run.add_argument("--track", action="store_true", help="log every run to Weights & Biases")
    run.add_argument("--wandb-project-name", default=None, help="W&B project (scripts' default: cleanrl-mlx)")
    run.add_argument("--wandb-entity", default=None, help="W&B entity (team)")

    sp = sub.add_parser("speed", help="SPS of each twin side by side, one run at a time: markdown tables",
                        description="Run each stem on its default env and flags with a shortened budget, one run "
                                    "at a time with MLX and PyTorch interleaved, and print (and with --out write) a "
                                    "markdown table per stem: SPS, the MLX/PyTorch ratio, ms per 1000 steps per "
                                    "phase, peak memory, BLAS and threads. Arguments after `--` pass through to "
                                    "every script. A rerun reuses complete runs made with the same settings.")
    sp.add_argument("--algos", nargs="+", default=None,
                    help="stems (default: every stem of the table in benchmark/speed.py)")
    sp.add_argument("--repeats", type=positive, default=3, help="runs per twin, seeds 1..N (default: 3)")
    sp.add_argument("--total-timesteps", type=positive, default=None,
                    help="budget of every run (default: each stem's speed budget, past its learning_starts)")
    sp.add_argument("--runs-dir", type=Path, default=Path("runs-speed"), help="where the runs go (default: runs-speed)")
    sp.add_argument("--threads", type=positive, default=None,
                    help="OMP/OPENBLAS/MKL_NUM_THREADS for every run (default: left as they are; each run records "
                         "what it had)")
    blas = sp.add_mutually_exclusive_group()
    blas.add_argument("--mlx-blas", choices=list(launch.BLAS_WORD), default=None,
                      help="BLAS of the MLX runs on Linux, as for `run` (default: the scripts' own choice)")
    blas.add_argument("--compare-blas", action="store_true",
                      help="run the MLX side with OpenBLAS and with the reference BLAS, interleaved")
    sp.add_argument("--timing-check", action="store_true",
                    help="also run every pair with --no-timing and show SPS with the timers on and off")
    sp.add_argument("--dataset", nargs="+", action="extend", default=None, metavar="[STEM=]PATH",
                    help="dataset of the offline stems (cql, cql_discrete), which are skipped without one")
    sp.add_argument("--out", type=Path, default=None, help="also write the markdown to this file, e.g. speed.md")
    sp.add_argument("--force", action="store_true", help="rerun runs that are already complete")
    sp.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")

    pa = sub.add_parser("parts", help="the building blocks of the scripts' steps, MLX vs PyTorch: a markdown table",
                        description="Time the pieces a slow phase is made of (a matrix product, a layer, an Adam "
                                    "step, TD3's critic update, DQN's action) in fresh processes set up as the "
                                    "scripts set themselves up, MLX and PyTorch alternating, and print (and with "
                                    "--out write) one row per block. See benchmark/parts.py.")
    pa.add_argument("--blocks", nargs="+", choices=list(parts_blocks()), default=list(parts_blocks()),
                    help="default: every block")
    pa.add_argument("--repeats", type=positive, default=3, help="processes per framework (default: 3)")
    pa.add_argument("--seconds", type=positive_float, default=0.2,
                    help="length of each of a block's 5 timed batches, in seconds (default: 0.2)")
    pa.add_argument("--out", type=Path, default=None, help="also write the markdown to this file")

    ds = sub.add_parser("dataset", help="make an offline dataset (.npz) for cql / cql_discrete, with a JSON of how",
                        description="Make an offline dataset: random actions, the replay buffer of the project's own "
                                    "SAC (Box) or DQN (Discrete) script, or rollouts of a partly (medium) or fully "
                                    "(expert) trained one. Writes OUT and OUT's .json (how it was made, the "
                                    "behaviour policy's and a random policy's mean return). Arguments after `--` "
                                    "pass through to the source script's training run.")
    ds.add_argument("--env-id", default="Pendulum-v1", help="gymnasium id (default: Pendulum-v1)")
    ds.add_argument("--kind", choices=["random", "replay", "medium", "expert"], required=True)
    ds.add_argument("--size", type=positive, required=True, help="transitions in the dataset")
    ds.add_argument("--out", type=Path, required=True, help="the .npz to write (its .json goes beside it)")
    ds.add_argument("--seed", type=int, default=1, help="seed of the env, the actions and the source runs (default: 1)")
    ds.add_argument("--framework", choices=list(launch.SCRIPT_DIRS), default="mlx",
                    help="which twin runs the source script (default: mlx)")
    ds.add_argument("--train-steps", type=positive, default=None,
                    help="medium/expert: training budget of the behaviour policy (default: per kind, see "
                         "benchmark/dataset.py)")
    ds.add_argument("--model-path", type=Path, default=None,
                    help="medium/expert: roll out this saved model (--save-model of sac/dqn) instead of training one")
    ds.add_argument("--runs-dir", type=Path, default=Path("runs-dataset"),
                    help="where the source runs go (default: runs-dataset)")
    ds.add_argument("--reference-episodes", type=positive, default=10,
                    help="episodes of the random policy whose mean return the JSON records (default: 10)")
    ds.add_argument("--quiet", action="store_true", help="hide the source runs' progress lines")

    rep = sub.add_parser("report", help="README.md and figures from a runs folder")
    rep.add_argument("runs_dir", type=Path, help="the folder holding the run folders, e.g. runs/")
    rep.add_argument("--out", type=Path, default=Path("report"), help="output folder (default: report)")
    rep.add_argument("--smooth", type=positive, default=10, help="rolling mean over this many episodes (default: 10)")

    wb = sub.add_parser("wandb-report", help="a W&B report of the same panels (needs a login and network)")
    wb.add_argument("--entity", required=True)
    wb.add_argument("--project", required=True)
    wb.add_argument("--title", default="MLX vs PyTorch: cleanrl-mlx benchmark")
    return p


def positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def parts_blocks():
    from .parts import BLOCKS

    return BLOCKS


def split_passthrough(argv):
    """(harness arguments, script arguments after the first `--`)."""
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, []


def wandb_args(args) -> list:
    if not args.track:
        return []
    extra = ["--track"]
    if args.wandb_project_name:
        extra += ["--wandb-project-name", args.wandb_project_name]
    if args.wandb_entity:
        extra += ["--wandb-entity", args.wandb_entity]
    return extra


def cmd_run(args, passthrough) -> int:
    workers, threads = (1 if args.timing_mode else args.workers), args.threads
    if threads is None and (args.timing_mode or workers > 1):
        # timing: fixed and the same for both frameworks; parallel: no oversubscription (torch's
        # threads spin, and 2 runs x all cores slowed torch ~7x on a 2-core machine)
        threads = max(1, (os.cpu_count() or 1) // workers)
    if args.timing_mode:
        print("timing mode: one run at a time, frameworks interleaved; complete runs made alongside others are redone")
    if threads is not None:
        print(f"{', '.join(launch.THREAD_VARS)} = {threads} for every run")
    settings = launch.Settings(args.runs_dir, wandb_args(args) + passthrough, threads, args.mlx_blas, args.timing_mode,
                               pin_thread=workers == 1)
    jobs = launch.plan(args.algos, args.env_ids, args.seeds, args.frameworks, args.total_timesteps)
    jobs, missing = launch.split_missing(jobs)
    for message in missing:
        print(f"note: {message}")
    if not jobs:
        print("error: none of the requested scripts exists; nothing to run", file=sys.stderr)
        return 2
    jobs, skipped = (jobs, []) if args.force else launch.split_done(jobs, settings)
    print(f"{len(jobs)} run(s) to do, {len(skipped)} already complete (skipped), {workers} at a time")
    if args.dry_run:
        for job in jobs:
            print(f"{settings.env_note(job)} {shlex.join(settings.command(job))}")
        return 0
    try:
        results = launch.execute(jobs, settings, workers)
    except KeyboardInterrupt:
        return 130
    return launch.final_report(results, skipped, missing, launch.blas_warnings(results, settings))


def cmd_speed(args, passthrough, command) -> int:
    from . import speed

    try:
        plan = speed.make_plan(args.algos, args.repeats, args.runs_dir, args.total_timesteps, passthrough, args.threads,
                               args.mlx_blas, args.timing_check, args.compare_blas, args.dataset, command)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for entry in plan.entries:
        for message in ([entry.skipped] if entry.skipped else []) + entry.notes:
            print(f"note: {entry.algo}: {message}")
    if all(entry.skipped for entry in plan.entries):
        print("error: none of the requested stems can run; nothing to measure", file=sys.stderr)
        return 2
    print("speed: one run at a time, MLX and PyTorch interleaved; " + speed.threads_setting(plan))
    try:
        status = speed.measure(plan, args.force, args.dry_run)
    except KeyboardInterrupt:  # Ctrl-C (or `timeout -s INT`): the tables of the runs completed so far
        if args.dry_run:
            return 130
        print("interrupted: the tables below hold the runs completed so far", file=sys.stderr)
        status = 130
    if args.dry_run:
        return status
    lines, problems = speed.render(plan)
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    markdown = "\n".join(lines)
    print("\n" + markdown)
    if args.out:
        args.out.write_text(markdown)
        print(f"wrote {args.out}")
    return status


def cmd_parts(args, command) -> int:
    from . import parts

    try:
        runs = parts.measure(args.blocks, args.repeats, args.seconds)
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    markdown = "\n".join(parts.render(runs, args.blocks, command))
    print("\n" + markdown)
    if args.out:
        args.out.write_text(markdown)
        print(f"wrote {args.out}")
    return 0


def cmd_report(args) -> int:
    from .report import build

    try:
        readme, problems, n_runs = build(args.runs_dir, args.out, args.smooth)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    print(f"wrote {readme} from {n_runs} complete run(s), {len(problems)} problem(s)")
    return 0 if n_runs else 1


def cmd_wandb_report(args) -> int:
    from .wandb_report import WandbUnavailable, publish

    try:
        url = publish(args.entity, args.project, args.title)
    except WandbUnavailable as e:
        print(f"wandb-report: {e}", file=sys.stderr)
        return 1
    print(f"W&B report: {url}")
    return 0


def main(argv=None) -> int:
    argv, passthrough = split_passthrough(list(sys.argv[1:] if argv is None else argv))
    args = parser().parse_args(argv)
    if args.command == "run":
        return cmd_run(args, passthrough)
    if args.command == "speed":
        command = ["python", "-m", "benchmark", *argv, *(["--", *passthrough] if passthrough else [])]
        return cmd_speed(args, passthrough, shlex.join(command))
    if args.command == "dataset":
        from . import dataset

        command = ["python", "-m", "benchmark", *argv, *(["--", *passthrough] if passthrough else [])]
        return dataset.main(args, passthrough, shlex.join(command))
    if passthrough:
        parser().error(f"`--` arguments are for `run`, `speed` and `dataset` only, got {' '.join(passthrough)}")
    if args.command == "parts":
        return cmd_parts(args, shlex.join(["python", "-m", "benchmark", *argv]))
    return cmd_report(args) if args.command == "report" else cmd_wandb_report(args)


if __name__ == "__main__":
    sys.exit(main())
