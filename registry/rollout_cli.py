"""``lineguard registry rollout``: canary rollouts (``start``) and where each station is (``status``).

``start NAME VERSION --plan plan.yaml`` (or ``--canary``/``--fraction``/``--soak-*`` flags, which
override the file) runs the gate and promotes like ``registry promote --to production``, then the
two waves of ``lineguard.registry.canary`` with a progress line every few seconds; it exits 1 when
the rollout halted (production is then the previous version again). ``status NAME`` reads every
station's retained status from the broker and prints what each runs next to the registry's
production version and the rollout's last recorded step.
"""

from __future__ import annotations

import time
from datetime import UTC
from pathlib import Path
from typing import Any

import click

from lineguard.registry.tables import echo_table

__all__ = ["rollout"]

_STEPS = ("canary_start", "rollout", "canary_passed", "canary_halted", "rollback", "canary_done", "promote")


@click.group()
def rollout() -> None:
    """Canary rollouts: a new version reaches a few stations first and halts itself."""


def _registry_command(ctx: click.Context, name: str) -> click.Command:
    """``lineguard registry NAME``, found up the command tree: this group is registered under it."""
    parent = ctx.parent
    while parent is not None:
        if isinstance(parent.command, click.Group):
            found = parent.command.get_command(parent, name)
            if found is not None:
                return found
        parent = parent.parent
    raise click.UsageError(f"'rollout' runs under 'lineguard registry', which has no '{name}' command")


@rollout.command()
@click.argument("name")
@click.argument("version")
@click.option(
    "--plan",
    "plan_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Rollout plan YAML: canary, soak, guards (README: canary rollouts).",
)
@click.option(
    "--canary", "canaries", multiple=True, metavar="LINE/STATION", help="A canary station (repeat)."
)
@click.option("--fraction", type=float, default=None, help="Or this share of the followers as canaries.")
@click.option("--soak-units", type=int, default=None, help="Units each canary decides with the new version.")
@click.option("--soak-minutes", type=float, default=None, help="And at least this long.")
@click.option("--force", is_flag=True, help="Skip the promotion gate (needs --reason; audited).")
@click.option("--reason", default="", help="Why (kept in the history).")
@click.option("--by", default=None, help="Who rolls out [default: $USER].")
@click.option("--accept-missed-target", default="", metavar="REASON", help="As for 'registry promote'.")
@click.option("--eval-set", type=click.Path(path_type=Path, file_okay=False), default=None)
@click.option("--golden", type=click.Path(path_type=Path, file_okay=False), default=None)
@click.pass_context
def start(
    ctx: click.Context,
    name: str,
    version: str,
    plan_path: Path | None,
    canaries: tuple[str, ...],
    fraction: float | None,
    soak_units: int | None,
    soak_minutes: float | None,
    force: bool,
    reason: str,
    by: str | None,
    accept_missed_target: str,
    eval_set: Path | None,
    golden: Path | None,
) -> None:
    """Promote NAME VERSION to production through canary stations; halt and roll back on their signals."""
    from lineguard.config import load_plan
    from lineguard.registry.canary import CanaryRollout
    from lineguard.releases import Signer

    overrides: dict[str, Any] = {}
    if canaries or fraction is not None:
        overrides["canary"] = {"stations": list(canaries), "fraction": fraction or 0.0}
    soak = {"units": soak_units, "minutes": soak_minutes}
    if any(v is not None for v in soak.values()):
        overrides["soak"] = {k: v for k, v in soak.items() if v is not None}
    plan = load_plan(plan_path, overrides)
    promote = _registry_command(ctx, "promote")
    cfg = ctx.obj.cfg()
    reg = ctx.obj.open()
    key = cfg.registry.signing_key
    signer = Signer.from_file(key) if key is not None else None
    if signer is None:
        click.echo(
            "warning: registry.signing_key is not set; the rollout is unsigned "
            "(stations that pin a key refuse it)"
        )
    run = CanaryRollout(
        reg,
        name,
        version,
        plan,
        cfg.mqtt,
        public_url=cfg.registry.public_url,
        signer=signer,
        by=by,
        say=click.echo,
    )
    run.start()
    try:
        result = run.run(
            lambda: ctx.invoke(
                promote,
                ref=f"{name}:{version}",
                to="production",
                force=force,
                reason=reason,
                by=by,
                accept_missed_target=accept_missed_target,
                eval_set=eval_set,
                golden=golden,
                publish=False,
                refresh_labels=False,
            )
        )
    finally:
        run.close()
    if result.halted:
        click.echo(f"rollout of {name}:{version} halted; {name}:{result.previous} is production")
        ctx.exit(1)
    if cfg.sampling.label_studio_url:  # as after 'registry promote': QA's waiting tasks get the new boxes
        from lineguard.labeling import refresh_after_promotion

        refresh_after_promotion(cfg, Path(f"{name}@{version}"), say=click.echo)


@rollout.command()
@click.argument("name")
@click.option(
    "--wait-s",
    type=click.FloatRange(0.1, 60),
    default=2.0,
    show_default=True,
    help="How long to collect the stations' retained status messages.",
)
@click.pass_context
def status(ctx: click.Context, name: str, wait_s: float) -> None:
    """Where each station is: the version its status reports, its role, and the last rollout step."""
    from lineguard.registry.fleet_watch import FleetWatch

    cfg = ctx.obj.cfg()
    reg = ctx.obj.open()
    production = reg.production(name)
    events = reg.history(name)
    starts = [e for e in events if e.action == "canary_start"]
    canaries = set(starts[-1].detail.get("canaries", [])) if starts else set()
    followers = {f"{st.line}/{st.station}" for st in reg.stations(name)}
    watch = FleetWatch(cfg.mqtt, name).start()
    try:
        time.sleep(wait_s)
        statuses = watch.statuses()
    finally:
        watch.stop()
    stations = sorted(
        followers | {s for s, st in statuses.items() if st.model is not None and st.model.name == name}
    )
    rows = []
    for station in stations:
        st = statuses.get(station)
        runs = "-" if st is None or st.model is None else f"{st.model.name}:{st.model.version}"
        rows.append(
            [
                station,
                "canary" if station in canaries else "-",
                "registry" if station in followers else "config",
                "no status" if st is None else st.state,
                runs,
                "-" if st is None else st.ts.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
            ]
        )
    click.echo(f"{name}: production {production.version if production else '-'}")
    if rows:
        echo_table(rows, ["STATION", "ROLE", "FOLLOWS BY", "STATE", "RUNS", "STATUS AT (UTC)"])
    else:
        click.echo(f"no station follows {name} or reports running it")
    steps = [e for e in events if e.action in _STEPS]
    if steps:
        last = steps[-1]
        when = last.at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
        click.echo(f"last step: {when} {last.action} {last.version or '-'} by {last.who}: {last.why[:300]}")
    else:
        click.echo(f"last step: none recorded for {name}")
