"""``lineguard registry``: add model versions, move them through stages, roll them out, serve them.

Each command opens the registry at ``registry.root`` of the config (``--config``, or ``--root``)
and prints a table or one line. Promotion to production runs the gate (candidate and production
on ``registry.eval_set`` through the edge's ONNX detector) unless ``--force --reason`` is given,
then publishes the retained ``…/model`` message to the following stations and, when the config
names a Label Studio (``sampling.label_studio_url``), adds the new model's boxes to the tasks
still waiting for QA; rollback does the same rollout for the previous production version.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from lineguard.errors import InputError
from lineguard.registry.rollout_cli import rollout
from lineguard.registry.tables import echo_table as _table

if TYPE_CHECKING:
    from lineguard.config import LineguardConfig
    from lineguard.messages import ModelCard
    from lineguard.registry.store import ModelVersion, Registry

__all__ = ["registry"]


class _Ctx:
    def __init__(self, config: Path | None, root: Path | None, uri: str | None) -> None:
        self.config_path = config
        self.root = root
        self.uri = uri

    def cfg(self) -> LineguardConfig:
        from lineguard.config import load_config

        # --registry-uri is checked like the config key, so a typo gets the same one-line error
        cfg = load_config(self.config_path, overrides={"registry": {"uri": self.uri}} if self.uri else None)
        if self.root is not None:
            cfg.registry.root = self.root
        return cfg

    def open(self) -> Registry:
        from lineguard.registry.store import Registry

        return Registry.from_config(self.cfg().registry)


pass_ctx = click.make_pass_decorator(_Ctx)


@click.group()
@click.option(
    "--config",
    "config",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="LINEGUARD_CONFIG",
    help="Config YAML (registry.root, mqtt, gate margins).",
)
@click.option(
    "--root",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Registry folder (overrides registry.root).",
)
@click.option(
    "--registry-uri",
    "uri",
    default=None,
    help="Where the records live (overrides registry.uri; env LINEGUARD_REGISTRY__URI): "
    "mlflow+http://HOST:PORT = an MLflow tracking server; unset = the file registry in the folder.",
)
@click.pass_context
def registry(ctx: click.Context, config: Path | None, root: Path | None, uri: str | None) -> None:
    """Model versions, stages and rollout."""
    ctx.obj = _Ctx(config, root, uri)


def _version_row(mv: ModelVersion) -> list[str]:
    m = mv.card.metrics
    return [
        mv.name,
        mv.version,
        mv.stage.value,
        mv.sha256[:12],
        mv.parent or "-",
        f"{m.map50:.3f}" if m else "-",
        mv.added_at.strftime("%Y-%m-%d %H:%M"),
        mv.added_by,
    ]


def _split_ref(ref: str) -> tuple[str, str]:
    from lineguard.registry.store import parse_ref

    name, version = parse_ref(ref)
    if version is None:
        raise InputError(f"{ref!r} names no version; write NAME:VERSION")
    return name, version


@registry.command()
@click.argument("path", type=click.Path(path_type=Path, exists=True))
@click.option("--by", default=None, help="Who adds it [default: $USER].")
@click.option("--reason", default="", help="Why (kept in the history).")
@pass_ctx
def add(obj: _Ctx, path: Path, by: str | None, reason: str) -> None:
    """Add a model folder (model.onnx + model_card.json) or a run with one export, as a candidate."""
    mv = obj.open().add(path, by=by, why=reason)
    click.echo(
        f"{mv.ref} {mv.stage.value} sha256 {mv.sha256[:12]} (parent {mv.parent or '-'}, "
        f"dataset {mv.dataset_hash[:12] or '-'}, run {mv.training_run or '-'})"
    )


@registry.command("list")
@click.argument("name", required=False)
@pass_ctx
def list_(obj: _Ctx, name: str | None) -> None:
    """List versions (of NAME) with stage, sha256, parent and mAP50."""
    reg = obj.open()
    rows = [_version_row(v) for v in reg.versions(name)]
    if not rows:
        click.echo("no models in the registry" + (f" named {name}" if name else ""))
        return
    _table(rows, ["NAME", "VERSION", "STAGE", "SHA256", "PARENT", "MAP50", "ADDED", "BY"])
    follows = reg.stations(name)
    if follows:
        click.echo("")
        _table([[f"{s.line}/{s.station}", s.model] for s in follows], ["STATION", "FOLLOWS"])


def _calibration(card: ModelCard) -> str:
    if card.targets is None or card.achieved is None:
        return "uncalibrated (thresholds not tuned for an escape target)"
    escape = card.achieved.escape_rate
    got = "-" if escape is None else f"{escape:.2%}"
    return f"max escape {card.targets.max_escape:.2%}, achieved {got} on {card.achieved.split}"


@registry.command()
@click.argument("ref")
@pass_ctx
def show(obj: _Ctx, ref: str) -> None:
    """Show NAME[:VERSION] (default: the production version): card, lineage, metrics."""
    from lineguard.registry.store import parse_ref

    name, version = parse_ref(ref)
    reg = obj.open()
    mv = reg.get(name, version)
    card = mv.card
    rows = [
        ["model", mv.ref],
        ["stage", mv.stage.value],
        ["sha256", mv.sha256],
        ["classes", ", ".join(card.classes)],
        ["input", f"{card.input_size} px"],
        ["thresholds", ", ".join(f"{k}={v:g}" for k, v in card.thresholds.items())],
        ["calibration", _calibration(card)],
        ["parent", mv.parent or "-"],
        ["dataset", mv.dataset_hash or "-"],
        ["training run", mv.training_run or "-"],
        ["added", f"{mv.added_at.isoformat(timespec='seconds')} by {mv.added_by}"],
        ["artifact", str(reg.blob_path(mv.sha256))],
        ["records", reg.backend.where],
    ]
    if card.metrics:
        m = card.metrics
        rows += [
            ["mAP50", f"{m.map50:.3f}"],
            ["mAP50-95", f"{m.map50_95:.3f}"],
            ["escape rate", "-" if m.escape_rate is None else f"{m.escape_rate:.3f}"],
            ["overkill rate", "-" if m.overkill_rate is None else f"{m.overkill_rate:.3f}"],
        ]
    _table(rows, ["FIELD", "VALUE"])


@registry.command()
@click.argument("ref")
@click.option("--to", "to", type=click.Choice(["staging", "production"]), required=True)
@click.option("--force", is_flag=True, help="Skip the gate (needs --reason; audited).")
@click.option("--reason", default="", help="Why (required with --force).")
@click.option("--by", default=None, help="Who promotes [default: $USER].")
@click.option(
    "--accept-missed-target",
    default="",
    metavar="REASON",
    help="Promote although the card misses its calibration target (reason audited).",
)
@click.option(
    "--eval-set",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Frozen evaluation set [default: registry.eval_set].",
)
@click.option(
    "--golden",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Golden images [default: registry.golden_dir].",
)
@click.option(
    "--report-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Where the gate report goes [default: ROOT/reports/NAME-VERSION].",
)
@click.option(
    "--publish/--no-publish", default=True, show_default=True, help="Send the retained model message."
)
@click.option(
    "--refresh-labels/--no-refresh-labels",
    default=True,
    show_default=True,
    help="After a production promotion, give the Label Studio tasks waiting for QA (sampling.*) "
    "the new model's boxes.",
)
@pass_ctx
def promote(
    obj: _Ctx,
    ref: str,
    to: str,
    force: bool,
    reason: str,
    by: str | None,
    accept_missed_target: str,
    eval_set: Path | None,
    golden: Path | None,
    report_dir: Path | None,
    publish: bool,
    refresh_labels: bool,
) -> None:
    """Promote NAME:VERSION to staging or production (production passes the gate first)."""
    from lineguard.registry.gate import gate_from_config
    from lineguard.registry.store import Registry, Stage

    name, version = _split_ref(ref)
    cfg = obj.cfg()
    reg = Registry.from_config(cfg.registry)
    stage = Stage(to)
    gate_audit = None
    if force and not reason.strip():
        raise InputError("--force needs --reason saying why the gate is skipped (it is audited)")
    if stage is Stage.PRODUCTION and not force and reg.production(name) is not None:
        out = report_dir or cfg.registry.root / "reports" / f"{name}-{version}"
        report = gate_from_config(
            cfg,
            reg,
            name,
            version,
            eval_set=eval_set,
            golden=golden,
            report_dir=out,
            accept_missed_target=accept_missed_target,
        )
        click.echo(report.markdown())
        click.echo(f"gate report: {out / 'gate_report.md'}")
        gate_audit = report.audit(out)
    mv = reg.promote(
        name,
        version,
        stage,
        by=by,
        why=reason,
        force=force,
        gate=gate_audit,
        accept_missed_target=accept_missed_target,
    )
    missed = mv.card.missed_target() if stage is Stage.PRODUCTION else None
    click.echo(
        f"{mv.ref} is now {mv.stage.value}"
        + (" (forced, gate skipped)" if force else "")
        + (f" (missed target accepted: {accept_missed_target.strip()})" if missed else "")
    )
    if stage is Stage.PRODUCTION and publish:
        _publish(cfg, reg, name)
    if stage is Stage.PRODUCTION and refresh_labels:
        _refresh_waiting_tasks(cfg, name, version)


def _refresh_waiting_tasks(cfg: LineguardConfig, name: str, version: str) -> None:
    """QA's waiting tasks get the new production model's boxes; a warning line if that fails."""
    from lineguard.labeling import refresh_after_promotion

    refresh_after_promotion(cfg, Path(f"{name}@{version}"), say=click.echo)


def _publish(cfg: LineguardConfig, reg: Registry, name: str) -> None:
    from lineguard.registry.rollout import publish_model
    from lineguard.releases import Signer

    key = cfg.registry.signing_key
    signer = Signer.from_file(key) if key is not None else None
    if signer is None:
        click.echo(
            "warning: registry.signing_key is not set; the rollout is unsigned "
            "(stations that pin a key refuse it)"
        )
    for ann in publish_model(reg, name, cfg.mqtt, public_url=cfg.registry.public_url, signer=signer):
        click.echo(f"published {ann.topic} (retained" + (f", signed by {signer.key_id})" if signer else ")"))


@registry.command()
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="Folder for the new key pair (created; existing key files are never overwritten).",
)
def keygen(out: Path) -> None:
    """Make an Ed25519 signing key pair: the private key signs rollouts, stations pin the public key."""
    from lineguard.releases import Signer, generate_keypair

    private, public = generate_keypair(out)
    click.echo(f"private key {private} (mode 0600): set registry.signing_key on the registry to it")
    click.echo(
        f"public key  {public} (key id {Signer.from_file(private).key_id}): "
        "add it to the stations' registry.public_keys"
    )


@registry.command()
@click.argument("name")
@click.option("--reason", default="", help="Why (kept in the history).")
@click.option("--by", default=None, help="Who rolls back [default: $USER].")
@click.option("--publish/--no-publish", default=True, show_default=True)
@pass_ctx
def rollback(obj: _Ctx, name: str, reason: str, by: str | None, publish: bool) -> None:
    """Return NAME's production to the previous production version and roll it out."""
    from lineguard.registry.store import Registry

    cfg = obj.cfg()
    reg = Registry.from_config(cfg.registry)
    mv = reg.rollback(name, by=by, why=reason)
    click.echo(f"{mv.ref} is production again")
    if publish:
        _publish(cfg, reg, name)


@registry.command()
@click.argument("ref")
@click.option("--reason", default="", help="Why (kept in the history).")
@click.option("--by", default=None)
@pass_ctx
def archive(obj: _Ctx, ref: str, reason: str, by: str | None) -> None:
    """Archive NAME:VERSION (never the production one)."""
    name, version = _split_ref(ref)
    mv = obj.open().archive(name, version, by=by, why=reason)
    click.echo(f"{mv.ref} archived")


@registry.command()
@click.argument("name")
@pass_ctx
def history(obj: _Ctx, name: str) -> None:
    """Every change to NAME: what, who, when, why."""
    events = obj.open().history(name)
    if not events:
        click.echo(f"no history for {name}")
        return
    rows = [
        [
            e.at.strftime("%Y-%m-%d %H:%M:%S"),
            e.action,
            e.version or "-",
            f"{e.from_stage or '-'} -> {e.to_stage or '-'}" if e.to_stage else "-",
            e.who,
            ("[forced] " if e.detail.get("forced") else "")
            + (
                f"[missed target accepted: {e.detail['missed_target'].get('accepted', '')}] "
                if isinstance(e.detail.get("missed_target"), dict)
                else ""
            )
            + e.why,
        ]
        for e in events
    ]
    _table(rows, ["WHEN (UTC)", "ACTION", "VERSION", "STAGE", "WHO", "WHY"])


@registry.command()
@click.argument("station")
@click.argument("name")
@click.option("--by", default=None)
@pass_ctx
def follow(obj: _Ctx, station: str, name: str, by: str | None) -> None:
    """Make LINE/STATION run NAME's production version (receives its rollouts)."""
    line, sep, st = station.partition("/")
    if not sep or not line or not st:
        raise InputError(f"station {station!r} must be written LINE/STATION")
    obj.open().follow(line, st, name, by=by)
    click.echo(f"{line}/{st} follows {name}")


@registry.command()
@click.argument("name")
@pass_ctx
def publish(obj: _Ctx, name: str) -> None:
    """Publish NAME's production version again to its stations (after a broker outage)."""
    from lineguard.registry.store import Registry

    cfg = obj.cfg()
    _publish(cfg, Registry.from_config(cfg.registry), name)


@registry.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8081, show_default=True)
@click.option(
    "--token-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Bearer token file [default: registry.token_file].",
)
@click.option(
    "--tls-cert",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Server certificate (PEM) for https; with --tls-key. Production stations fetch only over https.",
)
@click.option(
    "--tls-key",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Private key (PEM) of --tls-cert.",
)
@pass_ctx
def serve(
    obj: _Ctx, host: str, port: int, token_file: Path | None, tls_cert: Path | None, tls_key: Path | None
) -> None:
    """Serve artifacts and cards over http(s) to holders of the token (Ctrl-C stops)."""
    import uvicorn

    from lineguard.registry.server import read_token, server_config
    from lineguard.registry.store import Registry

    cfg = obj.cfg()
    token = read_token(token_file or cfg.registry.token_file)
    config = server_config(Registry.from_config(cfg.registry), token, host, port, tls_cert, tls_key)
    scheme = "http" if tls_cert is None else "https"
    click.echo(f"serving {cfg.registry.root} on {scheme}://{host}:{port}/v1/artifacts/<sha256>")
    uvicorn.Server(config).run()


registry.add_command(rollout)
