"""`python -m benchmark report runs/ --out report/`: README.md and PNGs from runs/*/summary.json
and the TensorBoard event files, nothing else."""

import datetime
from collections import defaultdict
from pathlib import Path

import numpy as np

from . import plots, stats
from .runs import FRAMEWORK_NAMES, collect, load_scalars

RETURN_TAG = "charts/episodic_return"
# stacking order of the phases (on-policy, off-policy, offline); unknown ones follow, then "other"
PHASE_ORDER = ("sample", "inference", "env_step", "storage", "buffer", "advantage", "update", "update_critic",
               "update_actor", "target_update", "evaluate")
OTHER = "other (outside the phases)"
FIGURES = {
    "returns_vs_steps.png": "Episodic return against environment steps",
    "returns_vs_walltime.png": "Episodic return against wall time",
    "phases.png": "Time per phase",
    "sps.png": "Steps per second across seeds",
}


def framework_order(frameworks):
    known = [f for f in FRAMEWORK_NAMES if f in frameworks]
    return known + sorted(set(frameworks) - set(known))


def group_runs(runs):
    """{(algo, env_id): {framework: [runs by seed]}}, frameworks in the order MLX, PyTorch."""
    groups = defaultdict(lambda: defaultdict(list))
    for run in runs:
        groups[run.group][run.framework].append(run)
    return {g: {f: by_fw[f] for f in framework_order(by_fw)} for g, by_fw in sorted(groups.items())}


# --- numbers -----------------------------------------------------------------------------------


def ms_per_1000_steps(seconds, steps):
    return seconds / steps * 1e6 if steps else float("nan")


def phase_ms(run, parts=False):
    """{phase: ms per 1000 env steps} of one run. parts=False: the top-level phases in stacking
    order plus the time outside them; parts=True: the update/* sub-phases of --profile-update,
    which are inside `update` and must not be stacked on it."""
    phases = run.summary.get("phases") or {}
    steps = run.summary.get("global_step") or run.total_timesteps
    names = [p for p in phases if ("/" in p) == parts]
    names.sort(key=lambda p: (PHASE_ORDER.index(p) if p in PHASE_ORDER else len(PHASE_ORDER), p))
    ms = {p: ms_per_1000_steps(phases[p]["seconds"], steps) for p in names}
    if not parts and ms:
        outside = run.summary.get("wall_seconds", 0.0) - sum(phases[p]["seconds"] for p in names)
        ms[OTHER] = max(ms_per_1000_steps(outside, steps), 0.0)
    return ms


def mean_dicts(dicts):
    """Key-wise mean, keys in first-seen order; a key missing from a dict counts as 0."""
    keys = list(dict.fromkeys(k for d in dicts for k in d))
    return {k: float(np.mean([d.get(k, 0.0) for d in dicts])) for k in keys}


def load_curves(groups, smooth: int):
    """{group: {framework: [(steps, smoothed returns, wall seconds)]}} and problems."""
    curves, problems = {}, []
    for group, by_fw in groups.items():
        curves[group] = {}
        for framework, runs in by_fw.items():
            curves[group][framework] = []
            for run in runs:
                try:
                    scalars = load_scalars(run, RETURN_TAG)
                except Exception as e:  # a damaged event file: leave this curve out, keep the rest
                    problems.append(f"{run.path.name}: cannot read its event files ({type(e).__name__}: {e})")
                    continue
                if scalars is None:
                    problems.append(f"{run.path.name}: no {RETURN_TAG} in its event files; no curve")
                    continue
                steps, values, wall = scalars
                curves[group][framework].append((steps, stats.rolling_mean(values, smooth), wall))
    return curves, problems


def bands(curves, axis: int):
    """axis 0: against steps, 2: against wall seconds."""
    return {g: {f: stats.band([(c[axis], c[1]) for c in cs]) for f, cs in by_fw.items()} for g, by_fw in curves.items()}


# --- markdown ----------------------------------------------------------------------------------


def fmt(value, digits=1, thousands=True):
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "—"
    return f"{value:,.{digits}f}" if thousands else f"{value:.{digits}f}"


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def distinct(runs, value):
    return "; ".join(sorted({str(value(r)) for r in runs}))


def threads_text(run):
    threads = run.threads
    text = " ".join(f"{k.split('_')[0]}={threads.get(k) or 'unset'}" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"))
    return text + (f" torch={threads['torch']}" if "torch" in threads else "")


def group_section(group, by_fw):
    algo, env_id = group
    names = [FRAMEWORK_NAMES.get(f, f) for f in by_fw]
    returns = {f: stats.summarize([r.summary.get("final_return") for r in rs]) for f, rs in by_fw.items()}
    sps = {f: stats.summarize([r.summary.get("sps") for r in rs]) for f, rs in by_fw.items()}
    pair = "mlx" in by_fw and "torch" in by_fw
    budgets = distinct([r for rs in by_fw.values() for r in rs], lambda r: f"{r.total_timesteps:,}")
    window = distinct([r for rs in by_fw.values() for r in rs], lambda r: r.summary.get("final_return_window"))

    def cells(per_fw, show):
        return [show(per_fw[f]) if per_fw[f] else "—" for f in by_fw]

    comparison = {"mean": "", "sps": ""}
    if pair and returns["mlx"] and returns["torch"]:
        comparison["mean"] = f"difference of means {returns['mlx'].mean - returns['torch'].mean:+,.1f}"
    if pair and sps["mlx"] and sps["torch"]:
        ratio = sps["mlx"].median / sps["torch"].median
        comparison["sps"] = f"MLX/PyTorch ratio of medians **{ratio:.2f}×** ({'MLX faster' if ratio > 1 else 'PyTorch faster'})"
    rows = [
        ["seeds", *[len(rs) for rs in by_fw.values()]],
        [f"final return, mean ± std (last {window} episodes)", *cells(returns, lambda s: f"{fmt(s.mean)} ± {fmt(s.std)}")],
        ["final return, IQM [95% bootstrap CI]", *cells(returns, lambda s: f"{fmt(s.iqm)} [{fmt(s.iqm_low)}, {fmt(s.iqm_high)}]")],
        ["SPS, median [min – max]", *cells(sps, lambda s: f"{fmt(s.median, 0)} [{fmt(s.min, 0)} – {fmt(s.max, 0)}]")],
    ]
    header = ["", *names]
    if pair:
        header.append("MLX vs PyTorch")
        for row, extra in zip(rows, ["", comparison["mean"], "", comparison["sps"]]):
            row.append(extra)
    lines = [f"### {algo} on {env_id} ({budgets} steps per run)", "", *table(header, rows), ""]
    if pair:
        verdict = stats.compare(*[[r.summary.get("final_return") for r in by_fw[f]] for f in ("mlx", "torch")])
        lines += [f"Do they learn the same? (Welch's t-test and Mann-Whitney U, two-sided, on the per-seed final "
                  f"returns): {verdict.text}", ""]
    lines += notes(by_fw) + phase_table(by_fw)
    return lines


def notes(by_fw):
    runs = [r for rs in by_fw.values() for r in rs]
    lines = []
    profiled = [r for r in runs if r.summary.get("profile_update")]
    if profiled:
        lines.append(f"- {len(profiled)} run(s) ran with --profile-update: syncs inside the update, so their SPS is "
                     f"not a speed figure.")
    untimed = [r for r in runs if not r.summary.get("phases")]
    if untimed:
        lines.append(f"- {len(untimed)} run(s) have no phase timers (--no-timing).")
    if len({r.total_timesteps for r in runs}) > 1:
        lines.append("- the runs have different budgets (total_timesteps): compare with care.")
    return lines + [""] if lines else []


def phase_table(by_fw):
    top = {f: mean_dicts([phase_ms(r) for r in rs]) for f, rs in by_fw.items()}
    parts = {f: mean_dicts([phase_ms(r, parts=True) for r in rs]) for f, rs in by_fw.items()}
    phases = list(dict.fromkeys(p for d in top.values() for p in d))
    subphases = list(dict.fromkeys(p for d in parts.values() for p in d))
    if not phases:
        return []
    rows = [[p, *[fmt(top[f].get(p), 2) for f in by_fw]] for p in phases]
    rows.append(["**total**", *[fmt(sum(top[f].values()), 1) for f in by_fw]])
    rows += [[f"{p} (part of update)", *[fmt(parts[f].get(p), 2) for f in by_fw]] for p in subphases]
    header = ["phase: ms per 1000 env steps, mean over seeds", *[FRAMEWORK_NAMES.get(f, f) for f in by_fw]]
    return [*table(header, rows), ""]


def provenance(groups):
    rows = []
    for (algo, env_id), by_fw in groups.items():
        for framework, runs in by_fw.items():
            rows.append([algo, env_id, FRAMEWORK_NAMES.get(framework, framework),
                         distinct(runs, lambda r: r.summary.get("framework_version")),
                         distinct(runs, lambda r: r.summary.get("device")), distinct(runs, lambda r: r.blas),
                         distinct(runs, threads_text),
                         distinct(runs, lambda r: f"{r.platform.get('cpu')} ({r.platform.get('cpu_count')} cores)"),
                         distinct(runs, lambda r: r.platform.get("os")), distinct(runs, lambda r: r.platform.get("python"))])
    header = ["algo", "env", "framework", "version", "device", "BLAS", "threads", "CPU", "OS", "Python"]
    return table(header, rows)


def run_rows(groups):
    rows = []
    for by_fw in groups.values():
        for runs in by_fw.values():
            rows += [[f"`{r.path.name}`", FRAMEWORK_NAMES.get(r.framework, r.framework), r.seed,
                      f"{r.summary.get('global_step', 0):,}", fmt(r.summary.get("final_return")),
                      fmt(r.summary.get("sps"), 0), fmt(r.summary.get("wall_seconds")), fmt(r.summary.get("peak_rss_mb"), 0),
                      r.blas, threads_text(r)] for r in runs]
    header = ["run folder", "framework", "seed", "steps", "final return", "SPS", "wall s", "peak RSS MB", "BLAS", "threads"]
    return table(header, rows)


def render(runs_dir, groups, problems, smooth, n_runs):
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    lines = ["# MLX vs PyTorch: benchmark report", "",
             f"Generated {when} by `python -m benchmark report` from {n_runs} complete run(s) in `{runs_dir}` "
             f"(their summary.json and TensorBoard event files).", "",
             "Speed is only comparable between runs made one at a time on the same machine "
             "(`python -m benchmark run --timing-mode`); runs made in parallel slow each other down.", ""]
    if problems:
        lines += ["## Problems", "", "Left out of the numbers below:", "", *[f"- {p}" for p in problems], ""]
    if not groups:
        return lines + ["No complete runs to report.", ""]
    lines += ["## Results", ""]
    for group, by_fw in groups.items():
        lines += group_section(group, by_fw)
    lines += ["## Figures", "",
              f"Curves: per seed, the rolling mean of the last {smooth} episodic returns "
              f"(`{RETURN_TAG}`), interpolated on a common grid; line: mean over seeds; band: 95% bootstrap "
              f"confidence interval of that mean. Wall time counts from each run's first event.", ""]
    lines += [f"![{title}]({name})\n" for name, title in FIGURES.items()]
    lines += ["## Where the numbers come from", "", *provenance(groups), "", "## Runs", "", *run_rows(groups), ""]
    return lines


def build(runs_dir, out_dir, smooth: int = 10):
    """Write out_dir/README.md and the figures; returns (README path, problems, number of runs)."""
    runs, problems = collect(runs_dir)
    groups = group_runs(runs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if groups:
        curves, curve_problems = load_curves(groups, smooth)
        problems += curve_problems
        smoothing = f"per seed: rolling mean of {smooth} episodes; line: mean over seeds; band: 95% bootstrap CI"
        plots.return_curves(bands(curves, 0), out / "returns_vs_steps.png", "environment steps",
                            f"Episodic return vs environment steps\n{smoothing}")
        plots.return_curves(bands(curves, 2), out / "returns_vs_walltime.png", "wall time since the run's start (s)",
                            f"Episodic return vs wall time\n{smoothing}")
        plots.phase_bars({g: {f: mean_dicts([phase_ms(r) for r in rs]) for f, rs in by_fw.items()} for g, by_fw in groups.items()},
                         out / "phases.png", "Time per phase (lower is faster)\nms per 1000 env steps, mean over seeds")
        plots.sps_strip({g: {f: [r.summary.get("sps", 0.0) for r in rs] for f, rs in by_fw.items()} for g, by_fw in groups.items()},
                        out / "sps.png", "Steps per second (higher is faster)\none dot per seed, black bar: median")
    readme = out / "README.md"
    readme.write_text("\n".join(render(runs_dir, groups, problems, smooth, len(runs))))
    return readme, problems, len(runs)
