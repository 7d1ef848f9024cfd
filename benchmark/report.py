"""`python -m benchmark report runs/ --out report/`: README.md and PNGs from runs/*/summary.json
and the TensorBoard event files, nothing else."""

import datetime
from collections import defaultdict
from pathlib import Path

import numpy as np

from . import plots, stats
from .runs import FRAMEWORK_NAMES, THREAD_VARS, collect, label, load_scalars

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


def mean_phases(runs, parts=False, statistic=np.mean):
    """Phase-wise statistic (the mean; np.median for the speed tables) over runs of phase_ms, phases
    in first-seen order; a missing phase counts as 0."""
    dicts = [phase_ms(r, parts) for r in runs]
    keys = list(dict.fromkeys(k for d in dicts for k in d))
    return {k: float(statistic([d.get(k, 0.0) for d in dicts])) for k in keys}


def per_framework(by_fw, fn):
    return {framework: fn(runs) for framework, runs in by_fw.items()}


def per_group(groups, fn):
    """{group: {framework: fn(runs of that framework)}}."""
    return {group: per_framework(by_fw, fn) for group, by_fw in groups.items()}


def values(runs, key):
    return [r.summary.get(key) for r in runs]


def load_curves(groups, smooth: int):
    """{group: {framework: [(steps, smoothed returns, wall seconds) per run]}} and problems."""
    problems = []

    def curve(run):
        try:
            scalars = load_scalars(run, RETURN_TAG)
        except Exception as e:  # a damaged event file: leave this curve out, keep the rest
            problems.append(f"{run.path.name}: cannot read its event files ({type(e).__name__}: {e})")
            return None
        if scalars is None:
            problems.append(f"{run.path.name}: no {RETURN_TAG} in its event files; no curve")
            return None
        steps, returns, wall = scalars
        return steps, stats.rolling_mean(returns, smooth), wall

    curves = per_group(groups, lambda runs: [c for c in map(curve, runs) if c is not None])
    return curves, problems


def bands(curves, axis: int):
    """axis 0: against steps, 2: against wall seconds."""
    return per_group(curves, lambda cs: stats.band([(c[axis], c[1]) for c in cs]))


# --- markdown ----------------------------------------------------------------------------------


def fmt(value, digits=1):
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "—"
    return f"{value:,.{digits}f}"


def median_range(summary, digits=0):
    """A stats.Summary as "median [min – max]"; "—" when there is none."""
    if summary is None:
        return "—"
    return f"{fmt(summary.median, digits)} [{fmt(summary.min, digits)} – {fmt(summary.max, digits)}]"


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def distinct(runs, value):
    return "; ".join(sorted({str(value(r)) for r in runs}))


def threads_text(run):
    threads = run.threads
    text = " ".join(f"{k.split('_')[0]}={threads.get(k) or 'unset'}" for k in THREAD_VARS)
    text += f" torch={threads['torch']}" if "torch" in threads else ""
    if "pinned_cpu" in threads:  # the scripts' pin_thread: the framework's calling thread kept on one CPU
        text += " pinned=" + ("no" if threads["pinned_cpu"] is None else f"cpu{threads['pinned_cpu']}")
    return text


def comparison(returns, sps):
    """The MLX vs PyTorch column of a group's table, row by row."""
    mean_diff = ratio = ""
    if returns["mlx"] and returns["torch"]:
        mean_diff = f"difference of means {returns['mlx'].mean - returns['torch'].mean:+,.1f}"
    if sps["mlx"] and sps["torch"]:
        r = sps["mlx"].median / sps["torch"].median
        ratio = f"MLX/PyTorch ratio of medians **{r:.2f}×** ({'MLX faster' if r > 1 else 'PyTorch faster'})"
    return ["", mean_diff, "", ratio]


def group_section(group, by_fw):
    algo, env_id = group
    runs = [r for rs in by_fw.values() for r in rs]
    returns = per_framework(by_fw, lambda rs: stats.summarize(values(rs, "final_return")))
    sps = per_framework(by_fw, lambda rs: stats.summarize(values(rs, "sps")))
    window = distinct(runs, lambda r: r.summary.get("final_return_window"))

    def cells(per_fw, show):
        return [show(s) if s else "—" for s in per_fw.values()]

    rows = [
        ["seeds", *[len(rs) for rs in by_fw.values()]],
        [f"final return, mean ± std (last {window} episodes)",
         *cells(returns, lambda s: f"{fmt(s.mean)} ± {fmt(s.std)}")],
        ["final return, IQM [95% bootstrap CI]",
         *cells(returns, lambda s: f"{fmt(s.iqm)} [{fmt(s.iqm_low)}, {fmt(s.iqm_high)}]")],
        ["SPS, median [min – max]", *cells(sps, median_range)],
    ]
    header = ["", *[label(f) for f in by_fw]]
    pair = "mlx" in by_fw and "torch" in by_fw
    if pair:
        header.append("MLX vs PyTorch")
        for row, extra in zip(rows, comparison(returns, sps)):
            row.append(extra)
    budgets = distinct(runs, lambda r: f"{r.total_timesteps:,}")
    lines = [f"### {algo} on {env_id} ({budgets} steps per run)", "", *table(header, rows), ""]
    if pair:
        verdict = stats.compare(values(by_fw["mlx"], "final_return"), values(by_fw["torch"], "final_return"))
        lines += [f"Do they learn the same? (Welch's t-test and Mann-Whitney U, two-sided, on the per-seed final "
                  f"returns): {verdict.text}", ""]
    return lines + notes(runs) + phase_table(by_fw)


def notes(runs):
    lines = []
    profiled = [r for r in runs if r.summary.get("profile_update")]
    if profiled:
        lines.append(f"- {len(profiled)} run(s) ran with --profile-update: syncs inside the update, so their SPS is "
                     f"not a speed figure.")
    untimed = [r for r in runs if not r.summary.get("phases")]
    if untimed:
        lines.append(f"- {len(untimed)} run(s) have no phase timers (--no-timing).")
    concurrent = [r for r in runs if r.concurrent]
    if concurrent:
        lines.append(f"- {len(concurrent)} of {len(runs)} run(s) ran at the same time as other runs (e.g. --workers 2): "
                     f"their SPS and phase times are distorted; for speed, rerun with --timing-mode.")
    if len({r.total_timesteps for r in runs}) > 1:
        lines.append("- the runs have different budgets (total_timesteps): compare with care.")
    return lines + [""] if lines else []


def phase_table(by_fw, statistic=np.mean, over="mean over seeds"):
    top = per_framework(by_fw, lambda rs: mean_phases(rs, statistic=statistic))
    parts = per_framework(by_fw, lambda rs: mean_phases(rs, parts=True, statistic=statistic))
    phases = list(dict.fromkeys(p for d in top.values() for p in d))
    subphases = list(dict.fromkeys(p for d in parts.values() for p in d))
    if not phases:
        return []
    rows = [[p, *[fmt(top[f].get(p), 2) for f in by_fw]] for p in phases]
    rows.append(["**total**", *[fmt(sum(top[f].values()), 1) for f in by_fw]])
    rows += [[f"{p} (part of update)", *[fmt(parts[f].get(p), 2) for f in by_fw]] for p in subphases]
    header = [f"phase: ms per 1000 env steps, {over}", *[label(f) for f in by_fw]]
    return [*table(header, rows), ""]


def cpu_text(run):
    return f"{run.platform.get('cpu')} ({run.platform.get('cpu_count')} cores)"


def summary_key(key, digits=None):
    return lambda run: fmt(run.summary.get(key), digits) if digits is not None else run.summary.get(key)


# (header, value of a run): the settings each number came from, and one row per run
PROVENANCE = [("version", summary_key("framework_version")), ("device", summary_key("device")),
              ("BLAS", lambda r: r.blas), ("threads", threads_text), ("CPU", cpu_text),
              ("OS", lambda r: r.platform.get("os")), ("Python", lambda r: r.platform.get("python"))]
RUN_COLUMNS = [("run folder", lambda r: f"`{r.path.name}`"), ("framework", lambda r: label(r.framework)),
               ("seed", lambda r: r.seed), ("steps", summary_key("global_step", 0)),
               ("final return", summary_key("final_return", 1)), ("SPS", summary_key("sps", 0)),
               ("wall s", summary_key("wall_seconds", 1)), ("peak RSS MB", summary_key("peak_rss_mb", 0)),
               ("BLAS", lambda r: r.blas), ("threads", threads_text),
               ("ran alone", lambda r: "no (parallel)" if r.concurrent else "yes")]


def provenance(groups):
    rows = [[algo, env_id, label(framework), *[distinct(runs, value) for _, value in PROVENANCE]]
            for (algo, env_id), by_fw in groups.items() for framework, runs in by_fw.items()]
    return table(["algo", "env", "framework", *[header for header, _ in PROVENANCE]], rows)


def run_rows(groups):
    rows = [[value(r) for _, value in RUN_COLUMNS] for by_fw in groups.values() for runs in by_fw.values() for r in runs]
    return table([header for header, _ in RUN_COLUMNS], rows)


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
                            f"Episodic return vs environment steps\n{smoothing}", compact_x=True)
        plots.return_curves(bands(curves, 2), out / "returns_vs_walltime.png", "wall time since the run's start (s)",
                            f"Episodic return vs wall time\n{smoothing}")
        plots.phase_bars(per_group(groups, mean_phases), out / "phases.png",
                         "Time per phase (lower is faster)\nms per 1000 env steps, mean over seeds")
        plots.sps_strip(per_group(groups, lambda rs: values(rs, "sps")), out / "sps.png",
                        "Steps per second (higher is faster)\none dot per seed, black bar: median")
    readme = out / "README.md"
    readme.write_text("\n".join(render(runs_dir, groups, problems, smooth, len(runs))))
    return readme, problems, len(runs)
