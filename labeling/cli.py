"""``lineguard label``: set up the Label Studio project, send frames, pull labels, show status.

``setup`` creates or updates the project from the model's classes; ``pull`` turns finished
annotations into a new dataset version; ``status`` shows the station's review queue and the
project's progress; ``send`` uploads image files by hand or drains the station's review queue
now; ``refresh`` gives the tasks still waiting for QA a model's boxes as a new prediction. The
server and token come from ``--url``/``--token`` or ``LABEL_STUDIO_URL`` /
``LABEL_STUDIO_API_KEY``, else from the station config's ``sampling`` section.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from lineguard.config import LineguardConfig
    from lineguard.labeling.label_studio import LabelStudioClient

__all__ = ["label"]


@dataclass(frozen=True)
class _Target:
    url: str
    token: str
    project: str


def _config(path: Path | None) -> LineguardConfig:
    from lineguard.config import load_config

    return load_config(path)


def _target(config_path: Path | None, url: str | None, token: str | None, project: str | None) -> _Target:
    from lineguard.errors import InputError
    from lineguard.labeling.label_studio import read_token

    sampling = _config(config_path).sampling
    url = url or sampling.label_studio_url
    if not token and sampling.label_studio_token_file is not None:
        token = read_token(sampling.label_studio_token_file)
    if not url:
        raise InputError("no Label Studio URL; pass --url, set LABEL_STUDIO_URL or sampling.label_studio_url")
    if not token:
        raise InputError("no Label Studio token; pass --token, set LABEL_STUDIO_API_KEY or a token file")
    return _Target(url, token, project or sampling.label_studio_project)


def _client(target: _Target) -> LabelStudioClient:
    from lineguard.labeling.label_studio import LabelStudioClient

    return LabelStudioClient(target.url, target.token)


_config_opt = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    envvar="LINEGUARD_CONFIG",
    default=None,
    help="Station YAML (Label Studio settings in its sampling section).",
)
_url_opt = click.option("--url", envvar="LABEL_STUDIO_URL", default=None, help="Label Studio base URL.")
_token_opt = click.option("--token", envvar="LABEL_STUDIO_API_KEY", default=None, help="API token.")
_project_opt = click.option("--project", default=None, help="Project title [sampling.label_studio_project].")


@click.group()
def label() -> None:
    """Label Studio: set up the project, send frames, pull labels back, show status."""


@label.command()
@_config_opt
@_url_opt
@_token_opt
@_project_opt
@click.option("--classes", default=None, help="Comma-separated class names, in model order.")
@click.option(
    "--model-card",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help="Take the classes from this model card.",
)
def setup(
    config_path: Path | None,
    url: str | None,
    token: str | None,
    project: str | None,
    classes: str | None,
    model_card: Path | None,
) -> None:
    """Create the project, or update its labels to the model's classes."""
    from lineguard.errors import InputError
    from lineguard.messages import ModelCard

    if (classes is None) == (model_card is None):
        raise InputError("pass exactly one of --classes a,b,c or --model-card PATH")
    names = (
        ModelCard.load(model_card).classes
        if model_card is not None
        else [c.strip() for c in (classes or "").split(",") if c.strip()]
    )
    target = _target(config_path, url, token, project)
    ls_project, what = _client(target).ensure_project(target.project, names)
    click.echo(
        f"project {ls_project.title!r} {what}: id {ls_project.id}, classes {', '.join(ls_project.classes)}; "
        f"{target.url.rstrip('/')}/projects/{ls_project.id}"
    )


@label.command()
@_config_opt
@_url_opt
@_token_opt
@_project_opt
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True, help="New version.")
@click.option(
    "--parent",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    default=None,
    help="Dataset version to extend (its data is carried over; its tasks are not pulled again).",
)
@click.option("--classes", default=None, help="Comma-separated classes when there is no parent.")
@click.option("--val-share", type=float, default=0.2, show_default=True, help="Share of new frames for val.")
def pull(
    config_path: Path | None,
    url: str | None,
    token: str | None,
    project: str | None,
    out: Path,
    parent: Path | None,
    classes: str | None,
    val_share: float,
) -> None:
    """Turn finished annotations into a new dataset version."""
    from lineguard.labeling.pull import pull_dataset

    target = _target(config_path, url, token, project)
    names = [c.strip() for c in classes.split(",") if c.strip()] if classes else None
    report = pull_dataset(
        _client(target), target.project, out, parent=parent, classes=names, val_share=val_share
    )
    click.echo(report.summary())
    if report.manifest is not None:
        click.echo(
            f"manifest {report.manifest.content_hash[:12]} (parent {report.manifest.parent or 'none'})"
        )


@label.command()
@_config_opt
@_url_opt
@_token_opt
@_project_opt
def status(config_path: Path | None, url: str | None, token: str | None, project: str | None) -> None:
    """Queue depth, sent and failed frames at this station; labeled and pending tasks in the project."""
    from lineguard.errors import DeliveryError, InputError
    from lineguard.labeling.review_outbox import read_stats, review_dir

    cfg = _config(config_path)
    root = review_dir(cfg.station.data_dir)
    s = read_stats(root)
    if s is not None:
        click.echo(
            f"review queue {root}: depth {s.depth}/{cfg.sampling.max_queue}, sent {s.sent}, "
            f"failed {s.failed}, dropped {s.dropped}"
            + (f"; last error: {s.last_error}" if s.last_error else "")
        )
    else:
        click.echo(f"review queue {root}: none yet")
    try:
        target = _target(config_path, url, token, project)
    except InputError as exc:
        click.echo(f"label studio: not configured ({exc})")
        return
    try:
        client = _client(target)
        ls_project = client.project(target.project)
        counts = client.project_counts(ls_project.id)
    except DeliveryError as exc:
        click.echo(f"label studio: unavailable ({exc})")
        return
    click.echo(
        f"label studio project {target.project!r} (id {ls_project.id}): {counts['tasks']} tasks, "
        f"labeled {counts['labeled']}, pending {counts['pending']}, skipped {counts['skipped']}"
    )


@label.command()
@_config_opt
@_url_opt
@_token_opt
@_project_opt
@click.option("--drain", is_flag=True, help="Upload the station's review queue now.")
@click.option("--retry-failed", is_flag=True, help="With --drain: also retry frames Label Studio refused.")
@click.option("--reason", default="manual", show_default=True, help="Sampling reason for image files.")
@click.argument("images", nargs=-1, type=click.Path(path_type=Path, dir_okay=False, exists=True))
def send(
    config_path: Path | None,
    url: str | None,
    token: str | None,
    project: str | None,
    drain: bool,
    retry_failed: bool,
    reason: str,
    images: tuple[Path, ...],
) -> None:
    """Upload image files as tasks (no prediction), or drain the review queue with --drain."""
    from lineguard.errors import InputError
    from lineguard.labeling.label_studio import LabelStudioSink
    from lineguard.labeling.review_outbox import ReviewItem, ReviewQueue, review_dir
    from lineguard.messages import utc_now

    if not images and not drain:
        raise InputError("nothing to send; name image files or pass --drain")
    cfg = _config(config_path)
    target = _target(config_path, url, token, project)
    client = _client(target)
    sink = LabelStudioSink(client, target.project)
    for path in images:
        item = ReviewItem(
            review_id=uuid.uuid4().hex,
            unit_id=path.stem,
            line=cfg.station.line,
            station=cfg.station.station,
            captured_at=utc_now(),
            reason=reason,
        )
        project_id = client.project(target.project).id
        task_id = client.create_review_task(project_id, item, path.read_bytes(), filename=path.name)
        click.echo(f"{path} -> task {task_id}")
    if drain:
        queue = ReviewQueue(review_dir(cfg.station.data_dir), max_items=cfg.sampling.max_queue)
        try:
            if retry_failed:
                queue.retry_failed()
            sent = queue.upload_pending(sink)
            s = queue.stats()
        finally:
            queue.close()
        click.echo(f"sent {sent} queued frames; {s.depth} left ({s.failed} refused)")


@label.command()
@_config_opt
@_url_opt
@_token_opt
@_project_opt
@click.option(
    "--model",
    "model",
    required=True,
    metavar="NAME@STAGE|PATH",
    help="Model whose boxes the waiting tasks get: name@production in registry.root, or an ONNX file.",
)
@click.option(
    "--page-size",
    type=click.IntRange(1, 1000),
    default=100,
    show_default=True,
    help="Tasks listed per request.",
)
def refresh(
    config_path: Path | None,
    url: str | None,
    token: str | None,
    project: str | None,
    model: str,
    page_size: int,
) -> None:
    """Add the model's boxes as a new prediction to every task nobody has annotated yet."""
    from lineguard.inference import Detector
    from lineguard.labeling.refresh import refresh_predictions

    cfg = _config(config_path)
    target = _target(config_path, url, token, project)
    client = _client(target)
    try:
        with Detector.for_station(Path(model), cfg) as detector:
            report = refresh_predictions(
                client,
                target.project,
                detector,
                uncertain_band=cfg.sampling.uncertain_band,
                page_size=page_size,
                progress=lambda line: click.echo(f"  {line}"),
            )
    finally:
        client.close()
    click.echo(report.summary())
