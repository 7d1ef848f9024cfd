"""`python -m benchmark speed`: how fast each MLX script runs next to its PyTorch twin, as markdown.

Every stem runs on its default env with its default flags; only the budget is shortened (STEMS),
to a length that still covers real training (off-policy stems go well past learning_starts).
The runs are launched as `run --timing-mode` launches them: one at a time, seed by seed, MLX and
PyTorch interleaved, the thread variables fixed for both (`--threads`; by default left as they are,
and what was in effect is read back from each run). Per stem the table gives each twin's SPS
(median [min – max] over the repeats), the MLX/PyTorch ratio of each seed's pair (median [min –
max]), per-phase ms per 1000 env steps (medians), peak memory, BLAS and threads.

    python -m benchmark speed --out speed.md                       # every stem, 3 repeats
    python -m benchmark speed --algos ppo sac --timing-check       # timers on vs off
    python -m benchmark speed --algos ppo --compare-blas -- --num-envs 8

Runs go to runs-speed/<variant>/ (timers-on, timers-off, mlx-reference-blas); a rerun reuses the
complete runs made alone with the same settings (--force redoes them).
"""

import datetime
import shlex
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

import numpy as np

from . import launch, stats
from .report import cpu_text, distinct, median_range, phase_table, table, threads_text
from .runs import collect, label

FRAMEWORKS = tuple(launch.SCRIPT_DIRS)  # mlx, torch: the order the twins run in


@dataclass(frozen=True)
class Stem:
    env_id: str  # the scripts' default env
    budget: int  # env steps (offline: gradient steps) of a speed run
    learning_starts: int = 0  # the scripts' default: no update before it
    offline: bool = False  # needs a dataset: the scripts' --dataset


# the scripts' defaults (check them when a script changes; tests compare the ones that exist)
STEMS = {
    "ppo": Stem("CartPole-v1", 50_000),  # ~100 updates of 512 steps
    "ppo_continuous": Stem("Pendulum-v1", 40_960),  # 20 updates of 2048 steps
    "a2c": Stem("CartPole-v1", 50_000),  # 1,250 updates of 40 steps
    "dqn": Stem("CartPole-v1", 30_000, learning_starts=10_000),
    "sac": Stem("Pendulum-v1", 15_000, learning_starts=5_000),
    "td3": Stem("Pendulum-v1", 40_000, learning_starts=25_000),
    "ddpg": Stem("Pendulum-v1", 40_000, learning_starts=25_000),
    "cql": Stem("Pendulum-v1", 1_000, offline=True),  # dataset: sac --save-dataset; ~60 ms a step on 2 cores
    "cql_discrete": Stem("CartPole-v1", 10_000, offline=True),  # dataset: dqn --save-dataset
}
MIN_UPDATE_STEPS = 10_000  # an off-policy budget goes at least this far past learning_starts
MIN_OFFLINE_STEPS = 1_000  # an offline budget makes at least this many gradient steps

MAIN, REFERENCE_BLAS, NO_TIMING = "timers-on", "mlx-reference-blas", "timers-off"  # folders of runs_dir


@dataclass
class Variant:
    """One way of running the stems: its folder under runs_dir, the frameworks it runs, how."""

    name: str
    frameworks: tuple
    settings: launch.Settings


@dataclass
class Entry:
    """One stem of the plan: what to run, or why not."""

    algo: str
    env_id: str = ""
    budget: int = 0
    extra_args: list = field(default_factory=list)  # the stem's own flags (the dataset)
    frameworks: tuple = FRAMEWORKS  # those whose script exists
    skipped: Optional[str] = None
    notes: list = field(default_factory=list)


@dataclass
class Plan:
    entries: list
    variants: list
    repeats: int
    command: str = "python -m benchmark speed"

    def settings(self, variant: Variant, entry: Entry) -> launch.Settings:
        return replace(variant.settings, extra_args=[*variant.settings.extra_args, *entry.extra_args])


def datasets_by_stem(datasets, algos) -> dict:
    """--dataset values, each PATH (every offline stem asked for) or STEM=PATH: {stem: path}."""
    found = {}
    for value in datasets or []:
        stem, eq, path = value.partition("=")
        if not eq or stem not in STEMS:
            found.update({algo: value for algo in algos if STEMS[algo].offline})
        else:
            found[stem] = path
    return found


def make_entry(algo, total_timesteps, passthrough, datasets) -> Entry:
    stem = STEMS[algo]
    entry = Entry(algo, stem.env_id, total_timesteps or stem.budget)
    if stem.offline:
        if algo not in datasets:
            entry.skipped = f"offline: needs a dataset (`--dataset {algo}=PATH`, e.g. a .npz from --save-dataset)"
            return entry
        if not Path(datasets[algo]).is_file():
            entry.skipped = f"dataset {datasets[algo]} is not a file"
            return entry
        entry.extra_args = ["--dataset", str(datasets[algo])]
    kept, missing = launch.split_missing(launch.plan([algo], [entry.env_id], 1, FRAMEWORKS, entry.budget))
    if not kept:
        entry.skipped = "no script yet (" + ", ".join(str(launch.script_path(algo, f).relative_to(launch.REPO_ROOT))
                                                    for f in FRAMEWORKS) + ")"
        return entry
    entry.frameworks = tuple(job.framework for job in kept)
    entry.notes += missing
    starts = int(float(launch.flag_values(passthrough).get("learning_starts", stem.learning_starts)))
    if starts and entry.budget < starts + MIN_UPDATE_STEPS:
        entry.notes.append(f"the budget ({entry.budget:,} steps) is not well past learning_starts ({starts:,}): "
                           f"few or no updates, so this SPS is mostly acting, not training")
    return entry


def make_plan(algos=None, repeats=3, runs_dir="runs-speed", total_timesteps=None, passthrough=(), threads=None,
              mlx_blas=None, timing_check=False, compare_blas=False, datasets=None, command=None) -> Plan:
    algos = list(algos or STEMS)
    unknown = [a for a in algos if a not in STEMS]
    if unknown:
        raise ValueError(f"unknown stem(s) {', '.join(unknown)}; known: {', '.join(STEMS)}")
    runs_dir, passthrough = Path(runs_dir), list(passthrough)
    main = launch.Settings(runs_dir / MAIN, passthrough, threads, "openblas" if compare_blas else mlx_blas,
                           timing_mode=True)
    variants = [Variant(MAIN, FRAMEWORKS, main)]
    if compare_blas:
        variants.append(Variant(REFERENCE_BLAS, ("mlx",), replace(main, runs_dir=runs_dir / REFERENCE_BLAS,
                                                                  mlx_blas="reference", label="reference BLAS")))
    if timing_check:
        variants.append(Variant(NO_TIMING, FRAMEWORKS, replace(main, runs_dir=runs_dir / NO_TIMING,
                                                               extra_args=[*passthrough, "--no-timing"],
                                                               label="timers off")))
    datasets = datasets_by_stem(datasets, algos)
    entries = [make_entry(algo, total_timesteps, passthrough, datasets) for algo in algos]
    return Plan(entries, variants, repeats, command or "python -m benchmark speed")


# --- running -----------------------------------------------------------------------------------


def schedule(plan: Plan) -> list:
    """[(job, settings)] in launch order: stem by stem, seed by seed, and within a seed each variant's
    frameworks in turn: mlx, torch, [mlx with reference BLAS], [mlx, torch with timers off]."""
    pairs = []
    for entry in plan.entries:
        if entry.skipped:
            continue
        stem_pairs = []
        for variant in plan.variants:
            settings = plan.settings(variant, entry)
            frameworks = [f for f in variant.frameworks if f in entry.frameworks]
            stem_pairs += [(job, settings) for job in launch.plan([entry.algo], [entry.env_id], plan.repeats,
                                                                  frameworks, entry.budget)]
        pairs += sorted(stem_pairs, key=lambda pair: pair[0].seed)  # stable: keeps the order within a seed
    return pairs


def measure(plan: Plan, force=False, dry_run=False, out=print) -> int:
    """Launch the runs still to do, one at a time; 0, or 1 when a run failed."""
    pairs = schedule(plan)
    by_settings = {id(s): s for _, s in pairs}
    skipped = []
    if not force:
        done = set()
        for settings in by_settings.values():
            _, complete = launch.split_done([job for job, s in pairs if s is settings], settings)
            done |= {(id(settings), job) for job in complete}
        skipped = [(job, s) for job, s in pairs if (id(s), job) in done]
        pairs = [(job, s) for job, s in pairs if (id(s), job) not in done]
    out(f"{len(pairs)} run(s) to do, {len(skipped)} already complete (skipped), one at a time")
    if dry_run:
        for job, settings in pairs:
            out(f"{settings.env_note(job)} {shlex.join(settings.command(job))}")
        return 0
    results = launch.execute([job for job, _ in pairs], [s for _, s in pairs], workers=1, out=out)
    warnings = [w for settings in by_settings.values()
                for w in launch.blas_warnings([r for r in results if r.settings is settings], settings)]
    return launch.final_report(results, skipped, [], warnings, out=out)


# --- reading and tables ------------------------------------------------------------------------


def twin_runs(plan: Plan, variant: Variant, entry: Entry):
    """({framework: {seed: run}} of the runs made with the variant's settings, every framework of
    the variant a key; problems such as incomplete runs)."""
    settings = plan.settings(variant, entry)
    wanted = {job.key for job in launch.plan([entry.algo], [entry.env_id], plan.repeats, variant.frameworks,
                                             entry.budget)}
    runs, problems = [], []
    if Path(settings.runs_dir).is_dir():
        runs, problems = collect(settings.runs_dir, keep=lambda run: run.key in wanted and settings.matches(run))
    return {f: {run.seed: run for run in runs if run.framework == f} for f in variant.frameworks}, problems


def sps(by_seed):
    return stats.summarize([run.summary.get("sps") for run in by_seed.values()])


def pair_values(a, b, fn):
    """fn(a's run, b's run) for each seed both have: the interleaved pairs."""
    return [fn(a[seed].summary, b[seed].summary) for seed in sorted(a.keys() & b.keys())]


def sps_ratio(a, b):
    return a["sps"] / b["sps"] if a.get("sps") and b.get("sps") else None


def ratio_text(values):
    s = stats.summarize(values)
    if s is None:
        return "—"
    faster = "MLX faster" if s.median > 1 else "PyTorch faster" if s.median < 1 else "even"
    return f"**{s.median:.2f}×** [{s.min:.2f} – {s.max:.2f}] over {s.n} pair(s), {faster}"


def percent_text(values):
    s = stats.summarize(values)
    return "—" if s is None else f"{s.median:+.1f}% [{s.min:+.1f}% – {s.max:+.1f}%]"


def main_table(by_fw):
    runs = {f: list(by_seed.values()) for f, by_seed in by_fw.items()}

    def each(value):
        return [distinct(rs, value) if rs else "—" for rs in runs.values()]

    rows = [["SPS, median [min – max]", *[median_range(sps(by_seed)) for by_seed in by_fw.values()],
             ratio_text(pair_values(by_fw["mlx"], by_fw["torch"], sps_ratio))],
            ["peak memory MB, median [min – max]",
             *[median_range(stats.summarize([r.summary.get("peak_rss_mb") for r in rs])) for rs in runs.values()], ""],
            ["BLAS", *each(lambda r: r.blas), ""], ["threads", *each(threads_text), ""],
            ["version", *each(lambda r: r.summary.get("framework_version")), ""]]
    header = ["", *[label(f) for f in by_fw], "MLX / PyTorch SPS, per seed: median [min – max]"]
    with_runs = {f: rs for f, rs in runs.items() if rs}
    return [*table(header, rows), "", *phase_table(with_runs, statistic=np.median, over="median over the repeats")]


def timing_table(on, off):
    """SPS with the phase timers on and off (--no-timing), per framework, and their difference per seed."""
    change = {f: pair_values(on[f], off[f], lambda a, b: (a["sps"] / b["sps"] - 1) * 100 if b.get("sps") else None)
              for f in on}
    rows = [["timers on: SPS, median [min – max]", *[median_range(sps(on[f])) for f in on]],
            ["timers off (--no-timing): SPS, median [min – max]", *[median_range(sps(off[f])) for f in on]],
            ["on vs off, per seed: median [min – max]", *[percent_text(change[f]) for f in on]]]
    return ["Do the phase timers cost anything? The same runs with `--no-timing`, interleaved with the others:", "",
            *table(["", *[label(f) for f in on]], rows), ""]


def blas_table(main, reference):
    """MLX's SPS and ratio with each BLAS, against the same PyTorch runs."""
    rows = [[distinct(list(mlx.values()), lambda r: r.blas) or asked, median_range(sps(mlx)),
             ratio_text(pair_values(mlx, main["torch"], sps_ratio))]
            for asked, mlx in (("openblas", main["mlx"]), ("reference", reference["mlx"]))]
    return ["MLX with each BLAS (`--compare-blas`), against the same PyTorch runs:", "",
            *table(["MLX BLAS", "MLX SPS, median [min – max]", "MLX / PyTorch SPS, per seed: median [min – max]"],
                   rows), ""]


def missing_notes(plan, variant, entry, by_fw):
    notes = []
    for framework in entry.frameworks:
        have = by_fw.get(framework)
        if have is None or len(have) >= plan.repeats:
            continue
        lacking = [str(seed) for seed in range(1, plan.repeats + 1) if seed not in have]
        what = label(framework) + (f" ({variant.settings.label})" if variant.settings.label else "")
        notes.append(f"{what}: {len(have)} of {plan.repeats} repeat(s); no complete run alone with these settings "
                     f"for seed(s) {', '.join(lacking)} (failed, or not run yet)")
    return notes


def stem_section(plan: Plan, entry: Entry):
    """(markdown lines, runs shown, problems) of one stem."""
    if entry.skipped:
        return [f"### {entry.algo}: skipped", "", f"- {entry.skipped}", ""], [], []
    found = {v.name: twin_runs(plan, v, entry) for v in plan.variants}
    by_variant = {name: by_fw for name, (by_fw, _) in found.items()}
    problems = [p for _, ps in found.values() for p in ps]
    runs = [r for by_fw in by_variant.values() for by_seed in by_fw.values() for r in by_seed.values()]
    lines = [f"### {entry.algo} on {entry.env_id} ({entry.budget:,} steps per run, {plan.repeats} repeat(s))", ""]
    lines += main_table(by_variant[MAIN])
    if REFERENCE_BLAS in by_variant:
        lines += blas_table(by_variant[MAIN], by_variant[REFERENCE_BLAS])
    if NO_TIMING in by_variant:
        lines += timing_table(by_variant[MAIN], by_variant[NO_TIMING])
    notes = list(entry.notes)
    for variant in plan.variants:
        notes += missing_notes(plan, variant, entry, by_variant[variant.name])
    profiled = [r for r in runs if r.summary.get("profile_update")]
    if profiled:
        notes.append(f"{len(profiled)} run(s) ran with --profile-update: syncs inside the update, not a speed figure")
    lines += [f"- {note}" for note in notes] + ([""] if notes else [])
    return lines, runs, problems


def threads_setting(plan: Plan) -> str:
    threads = plan.variants[0].settings.threads
    if threads is None:
        return ("thread variables left as they were (each library's default unless set); the threads row says what "
                "each run had, `torch=` the threads PyTorch used")
    return f"{', '.join(launch.THREAD_VARS)} = {threads} for every run of both frameworks"


def machine(runs) -> str:
    """CPU, OS and versions, as the runs recorded them."""
    if not runs:
        return "no runs yet"
    parts = [distinct(runs, cpu_text), distinct(runs, lambda r: r.platform.get("os")),
             "Python " + distinct(runs, lambda r: r.platform.get("python"))]
    for framework in FRAMEWORKS:
        of_framework = [r for r in runs if r.framework == framework]
        if of_framework:
            parts.append(f"{label(framework)} {distinct(of_framework, lambda r: r.summary.get('framework_version'))}")
    return ", ".join(parts)


def render(plan: Plan):
    """(markdown lines, problems)."""
    sections, runs, problems = [], [], []
    for entry in plan.entries:
        lines, entry_runs, entry_problems = stem_section(plan, entry)
        sections += lines
        runs += entry_runs
        problems += entry_problems
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    head = ["## Speed: MLX vs PyTorch", "",
            f"`{plan.command}`, {when}.", "",
            f"- Machine: {machine(runs)}.",
            f"- Each stem on its default env and flags, only the budget shortened; one run at a time, MLX and PyTorch "
            f"interleaved seed by seed (seeds 1..{plan.repeats}); {threads_setting(plan)}.",
            "- SPS: env steps / wall seconds of the whole run. The ratio is MLX SPS / PyTorch SPS of the same seed "
            "(runs made one after the other), median and range over the pairs: above 1, MLX is faster.",
            "- Phases: ms per 1000 env steps, median over the repeats; `other` is the time outside the phases.", ""]
    return head + sections, problems
