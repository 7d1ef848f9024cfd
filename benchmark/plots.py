"""PNG figures, one panel per (algo, env_id): return curves, per-phase time, SPS across seeds.

Each function takes plain data keyed {(algo, env_id): {framework: ...}} and writes one file.
"""

import math
import textwrap

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import EngFormatter  # noqa: E402

from .runs import label  # noqa: E402

COLORS = {"mlx": "tab:orange", "torch": "tab:blue"}
PHASE_COLORS = plt.get_cmap("tab10").colors
OTHER_COLOR = "lightgrey"  # the time outside the phases, stacked last


def panels(groups, title: str, width: float = 5.5, height: float = 4.0):
    """A figure with one axis per group, at most 3 across; returns (figure, {group: axis})."""
    n = max(len(groups), 1)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows + 0.8), squeeze=False)
    for ax in axes.flat[len(groups):]:
        ax.set_visible(False)
    wrap = int(width * cols * 11)  # characters that fit across the figure at this font size
    fig.suptitle("\n".join(textwrap.fill(line, wrap) for line in title.split("\n")), fontsize=11)
    axes_by_group = dict(zip(groups, axes.flat))
    for (algo, env_id), ax in axes_by_group.items():
        ax.set_title(f"{algo} on {env_id}", fontsize=11)
        ax.grid(alpha=0.3)
    return fig, axes_by_group


def save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def return_curves(data, path, xlabel: str, title: str, compact_x: bool = False):
    """data: {group: {framework: stats.Band}}. Mean line and shaded 95% bootstrap band per framework.
    compact_x: tick labels such as 500k and 1M (for steps)."""
    fig, axes = panels(list(data), title)
    for group, ax in axes.items():
        if compact_x:
            ax.xaxis.set_major_formatter(EngFormatter(sep=""))
        for framework, band in data[group].items():
            if band is None:
                continue
            color = COLORS.get(framework)
            ax.plot(band.x, band.mean, color=color, label=f"{label(framework)}: mean of {band.n} seed(s)")
            ax.fill_between(band.x, band.low, band.high, color=color, alpha=0.25, linewidth=0)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("episodic return")
        if ax.has_data():
            ax.legend(fontsize=8, loc="best")
        else:
            ax.text(0.5, 0.5, "no episodes logged", ha="center", va="center", transform=ax.transAxes)
    save(fig, path)


def phase_bars(data, path, title: str):
    """data: {group: {framework: {phase: ms per 1000 steps}}}, the phases in stacking order.
    One stacked bar per framework; the total is the bar's height."""
    fig, axes = panels(list(data), title)
    phases = list(dict.fromkeys(p for by_fw in data.values() for ms in by_fw.values() for p in ms))
    colors = {p: PHASE_COLORS[i % len(PHASE_COLORS)] for i, p in enumerate(phases)}
    colors.update({p: OTHER_COLOR for p in phases if p.startswith("other")})
    for group, ax in axes.items():
        frameworks = list(data[group])
        for i, framework in enumerate(frameworks):
            bottom = 0.0
            for phase, ms in data[group][framework].items():
                ax.bar(i, ms, bottom=bottom, color=colors[phase], label=phase, width=0.6)
                bottom += ms
            ax.text(i, bottom, f"{bottom:.0f} ms", ha="center", va="bottom", fontsize=9)
        ax.set_xticks(range(len(frameworks)), [label(f) for f in frameworks])
        ax.set_ylabel("ms per 1000 env steps (mean over seeds)")
        ax.margins(y=0.12)
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles))  # one entry per phase
        ax.legend(list(unique.values())[::-1], list(unique)[::-1], fontsize=8, title="phase",
                  loc="upper left", bbox_to_anchor=(1.0, 1.0))
    save(fig, path)


def sps_strip(data, path, title: str):
    """data: {group: {framework: [sps per seed]}}: one dot per seed and a bar at the median."""
    fig, axes = panels(list(data), title, width=4.5)
    rng = np.random.default_rng(0)  # horizontal jitter, so equal values stay visible
    for group, ax in axes.items():
        frameworks = list(data[group])
        for i, framework in enumerate(frameworks):
            values = np.asarray([v for v in data[group][framework] if v is not None], dtype=float)
            if not len(values):
                continue
            color = COLORS.get(framework)
            ax.scatter(i + rng.uniform(-0.08, 0.08, len(values)), values, color=color, alpha=0.8)
            median = np.median(values)
            ax.hlines(median, i - 0.25, i + 0.25, color="black", linewidth=2)
            ax.text(i + 0.28, median, f"median {median:,.0f}", va="center", fontsize=9)
        ax.set_xticks(range(len(frameworks)), [label(f) for f in frameworks])
        ax.set_xlim(-0.5, len(frameworks) - 0.1)
        ax.set_ylabel("env steps per second (SPS)")
        top = max((v for vs in data[group].values() for v in vs if v is not None), default=1.0)
        ax.set_ylim(0, top * 1.15)
    save(fig, path)
