"""Statistics across seeds: bootstrap bands, IQM, and whether two frameworks learn the same."""

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

CONFIDENCE = 0.95
ALPHA = 0.05
MIN_SEEDS = 3  # per framework, for a test
N_RESAMPLES = 2000


def iqm(x, axis=0):
    """Interquartile mean: the mean of the middle 50% (25% trimmed from each end)."""
    return sps.trim_mean(x, 0.25, axis=axis)


def bootstrap_ci(samples, statistic=np.mean, confidence=CONFIDENCE, n_resamples=N_RESAMPLES, seed=0):
    """Percentile bootstrap over seeds (axis 0 of `samples`): (low, high), each of shape
    samples.shape[1:]. `statistic(x, axis=...)` reduces an axis, e.g. np.mean or iqm."""
    samples = np.asarray(samples, dtype=float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(samples), size=(n_resamples, len(samples)))
    values = statistic(samples[idx], axis=1)  # (n_resamples, ...)
    tail = (1 - confidence) / 2 * 100
    return np.percentile(values, tail, axis=0), np.percentile(values, 100 - tail, axis=0)


def rolling_mean(y, window: int):
    """Mean of the last `window` values at each point (fewer at the start)."""
    y = np.asarray(y, dtype=float)
    if window <= 1 or len(y) == 0:
        return y
    csum = np.cumsum(np.insert(y, 0, 0.0))
    idx = np.arange(1, len(y) + 1)
    lo = np.maximum(idx - window, 0)
    return (csum[idx] - csum[lo]) / (idx - lo)


@dataclass
class Band:
    """A curve across seeds on a common grid: mean and its bootstrap confidence band."""

    x: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    n: int


def band(curves, n_points: int = 200):
    """curves: [(x, y)] per seed, x increasing. Each seed is interpolated on a grid covering the
    range that every seed covers (no extrapolation). None when fewer than one usable curve."""
    curves = [(np.asarray(x, float), np.asarray(y, float)) for x, y in curves if len(x) >= 2]
    if not curves:
        return None
    start, end = max(x[0] for x, _ in curves), min(x[-1] for x, _ in curves)
    if end <= start:
        return None
    grid = np.linspace(start, end, n_points)
    matrix = np.stack([np.interp(grid, x, y) for x, y in curves])
    low, high = bootstrap_ci(matrix)
    return Band(grid, matrix.mean(axis=0), low, high, len(curves))


@dataclass
class Summary:
    n: int
    mean: float
    std: float  # sample std (ddof=1); nan with one seed
    iqm: float
    iqm_low: float
    iqm_high: float
    median: float
    min: float
    max: float


def summarize(values):
    x = np.asarray([v for v in values if v is not None], dtype=float)
    if len(x) == 0:
        return None
    low, high = bootstrap_ci(x, iqm)
    std = float(np.std(x, ddof=1)) if len(x) > 1 else float("nan")
    return Summary(len(x), float(x.mean()), std, float(iqm(x)), float(low), float(high),
                   float(np.median(x)), float(x.min()), float(x.max()))


@dataclass
class Verdict:
    text: str
    welch: tuple = None  # (t, p)
    mannwhitney: tuple = None  # (U, p)


def compare(a, b, names=("MLX", "PyTorch")) -> Verdict:
    """Do per-seed final returns a and b come from the same distribution? Welch's t-test (means,
    unequal variances) and the Mann-Whitney U test (ranks), two-sided, at ALPHA: "differ" when both
    reject, "inconclusive" when one does. Not rejecting is not proof of sameness: the text says so."""
    a, b = (np.asarray([v for v in s if v is not None], dtype=float) for s in (a, b))
    if min(len(a), len(b)) < MIN_SEEDS:
        return Verdict(f"too few seeds ({len(a)} {names[0]}, {len(b)} {names[1]}; a test needs at least "
                       f"{MIN_SEEDS} per framework)")
    if np.ptp(a) == 0 and np.ptp(b) == 0:  # no spread: the t statistic is undefined
        same = a[0] == b[0]
        return Verdict(f"every seed returned {a[0]:g} ({names[0]}) and {b[0]:g} ({names[1]}): "
                       + ("identical" if same else "different, with no spread to test"))
    t = sps.ttest_ind(a, b, equal_var=False)
    u = sps.mannwhitneyu(a, b, alternative="two-sided")
    welch, mw = (float(t.statistic), float(t.pvalue)), (float(u.statistic), float(u.pvalue))
    tests = f"Welch's t = {welch[0]:.2f}, p = {welch[1]:.3g}; Mann-Whitney U = {mw[0]:g}, p = {mw[1]:.3g}"
    floor = 2 / math.comb(len(a) + len(b), len(a))  # the smallest two-sided p the U test can give
    if floor >= ALPHA:
        tests += f"; with these seed counts Mann-Whitney cannot go below p = {floor:.2g}"
    significant = (welch[1] < ALPHA) + (mw[1] < ALPHA)
    if significant == 2:
        text = f"**differ**: both tests reject equal final returns at α = {ALPHA} ({tests})"
    elif significant == 1:
        text = f"**inconclusive**: one test rejects equal final returns at α = {ALPHA}, the other does not ({tests})"
    else:
        text = (f"**no detectable difference** at α = {ALPHA} ({tests}); with {len(a)} and {len(b)} seeds "
                f"this is consistent with learning the same, not a proof of it")
    return Verdict(text, welch, mw)
