"""`python -m benchmark wandb-report --entity E --project P`: a W&B report with the panels of the
local report (return vs steps and wall time, MLX and PyTorch aggregated on the same axes; SPS;
time per phase), one section per group f"{env_id}__{algo}" that the scripts' --track logged.

Needs a W&B login and network; without them it says so in one line (WandbUnavailable)."""

import contextlib
import io
import os
import socket
from urllib.parse import urlparse

RETURN = "charts/episodic_return"
OFFLINE_MODES = ("offline", "disabled", "dryrun")


class WandbUnavailable(Exception):
    """W&B cannot be reached from here: the message says why and what to do."""


def reports_module():
    """The W&B reports API: the wandb_workspaces package, else wandb's own (wandb < 0.17); newer
    wandb keeps only a stub there that prints errors, so it is imported quietly and checked."""
    try:
        import wandb_workspaces.reports.v2 as wr

        return wr
    except ImportError:
        pass
    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            import wandb.apis.reports as wr

            if isinstance(getattr(wr, "Report", None), type) and hasattr(wr.Report, "save"):
                return wr
    except Exception:
        pass
    raise WandbUnavailable("needs the W&B reports API: pip install wandb-workspaces")


def check_mode():
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in OFFLINE_MODES:
        raise WandbUnavailable(f"needs W&B online (a login and network), but WANDB_MODE={mode}: "
                               f"unset it and run `wandb login`")


def check_network(base_url: str, timeout: float = 5.0):
    url = urlparse(base_url)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
    except OSError as e:
        raise WandbUnavailable(f"needs network access to {base_url} ({e})") from None


def api(timeout: int = 20):
    import wandb

    try:
        return wandb.Api(timeout=timeout)
    except Exception as e:  # no API key: UsageError
        raise WandbUnavailable(f"needs a W&B login and network (`wandb login` or WANDB_API_KEY): {e}") from None


def split_group(group: str):
    """'CartPole-v1__ppo' -> ('ppo', 'CartPole-v1')."""
    env_id, _, algo = group.rpartition("__")
    return algo, env_id


def group_blocks(wr, entity: str, project: str, group: str, phases):
    """A heading and a panel grid for one group; runs aggregated by job_type (the framework)."""
    algo, env_id = split_group(group)
    runset = wr.Runset(entity=entity, project=project, name=group, filters=f"Group = '{group}'", groupby=["JobType"])
    aggregate = {"groupby_aggfunc": "mean", "groupby_rangefunc": "stderr"}
    panels = [
        wr.LinePlot(title=f"{algo} on {env_id}: episodic return vs steps", x="global_step", y=[RETURN],
                    title_x="environment steps", title_y="episodic return", **aggregate),
        wr.LinePlot(title=f"{algo} on {env_id}: episodic return vs wall time", x="RelativeTime(Wall)", y=[RETURN],
                    title_x="wall time (s)", title_y="episodic return", **aggregate),
        wr.BarPlot(title="steps per second (median, min-max over seeds)", metrics=["charts/SPS"], orientation="v",
                   groupby_aggfunc="median", groupby_rangefunc="minmax"),
    ]
    if phases:
        panels.append(wr.BarPlot(title="seconds per phase (whole run, mean over seeds)", orientation="v",
                                 metrics=[f"time/{p}" for p in phases], **aggregate))
    return [wr.H2(text=f"{algo} on {env_id}"), wr.PanelGrid(runsets=[runset], panels=panels)]


def report_blocks(wr, entity, project, groups):
    """groups: {group: [phase names]}."""
    intro = wr.P(text="MLX scripts and their PyTorch twins, grouped by W&B job_type (mlx, torch); "
                      "line: mean over seeds, band: standard error. Speed is comparable only for runs made "
                      "one at a time (python -m benchmark run --timing-mode).")
    return [intro] + [b for group, phases in sorted(groups.items()) for b in group_blocks(wr, entity, project, group, phases)]


def tracked_groups(runs):
    """{group: top-level phases seen} from W&B runs (their group and summary keys)."""
    groups = {}
    for run in runs:
        if not run.group:
            continue
        phases = groups.setdefault(run.group, [])
        for key in run.summary.keys():
            phase = key[len("time/"):] if key.startswith("time/") else None
            if phase and "/" not in phase and phase not in phases:
                phases.append(phase)
    return groups


def publish(entity: str, project: str, title: str) -> str:
    """Build and save the report; returns its URL."""
    import wandb

    check_mode()
    wr = reports_module()
    check_network(wandb.Settings().base_url)  # WANDB_BASE_URL or wandb's default server
    wandb_api = api()
    try:
        groups = tracked_groups(wandb_api.runs(f"{entity}/{project}"))
    except Exception as e:
        raise WandbUnavailable(f"cannot list the runs of {entity}/{project}: {e}") from None
    if not groups:
        raise WandbUnavailable(f"{entity}/{project} has no grouped runs (log them with `python -m benchmark run --track`)")
    report = wr.Report(entity=entity, project=project, title=title,
                       description="MLX vs PyTorch: return curves, SPS and per-phase time",
                       blocks=report_blocks(wr, entity, project, groups))
    report.save()
    return report.url
