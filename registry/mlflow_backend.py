"""The MLflow back-end: lineguard's registry records kept in an MLflow Model Registry.

Each lineguard version is one MLflow registered-model version of the same name. Its ONNX file, the
variant files its card names and the card are artifacts of a run (``model/model.onnx``,
``model/<variant file>``, ``model/model_card.json``) in the experiment
``lineguard-registry``; the version's tags carry lineguard's fields (``lineguard.version``,
``lineguard.sha256``, ``lineguard.stage``, lineage, who added it) and every audit event about it
(``lineguard.event.<ns>``: promotions with their gate summary, gate runs, rollouts with the signed
release). When the gate withdraws a variant's certification (``replace_card``) the new card is
logged beside the exported one as ``card/<sha256>/model_card.json`` and the version's
``lineguard.card_sha256`` tag names it; a cached card that does not hash to the tag is fetched
again, so every machine serves (and signs) the card the registry holds. The stages ``candidate``,
``staging`` and ``production`` are also MLflow aliases pointing
at the newest version holding them, which is how MLflow users mark them since 2.9. Stations that
follow a model are listed in the registered model's ``lineguard.stations`` tag. With a prefix
(``registry.mlflow_prefix``) the registered models are named ``<prefix><name>``, so several teams
(or test runs) share one MLflow without seeing each other's models.

MLflow numbers its versions itself; lineguard's version (the card's) is the ``lineguard.version``
tag. The mlflow client (``mlflow-skinny``, extra ``registry-mlflow``) is imported here only, when a
registry is opened with an ``mlflow+http(s)://`` URI: stations never load it. Unlike the file
back-end, a stage change is several calls, not one transaction.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

from lineguard.errors import ConfigError, DeliveryError, ModelError
from lineguard.messages import MODEL_NAME, MODEL_VERSION, ModelCard, sha256_file
from lineguard.redact import mask_url
from lineguard.registry.backend import card_location
from lineguard.registry.records import Event, ModelVersion, Stage, StationFollow

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion as MlflowVersion
    from mlflow.tracking import MlflowClient

__all__ = ["EXPERIMENT", "MlflowBackend"]

EXPERIMENT: Final = "lineguard-registry"
_TAG: Final = "lineguard."
_EVENT: Final = "lineguard.event."
_STATIONS: Final = "lineguard.stations"
_CARD_SHA: Final = "lineguard.card_sha256"  # set once the gate replaced the exported card
_SHA256: Final = re.compile(r"[0-9a-f]{64}")
_ALIASED = (Stage.PRODUCTION, Stage.STAGING, Stage.CANDIDATE)
_T = TypeVar("_T")


class MlflowBackend:
    """Registry records in the MLflow tracking server at ``tracking_uri``; cards cached under ``root``."""

    def __init__(self, tracking_uri: str, root: Path, prefix: str = "") -> None:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError as exc:
            raise ConfigError(
                "registry.uri names an MLflow server but the mlflow client is not installed: "
                "pip install 'lineguard[registry-mlflow]'"
            ) from exc
        self._uri = tracking_uri
        self._root = root
        self._prefix = prefix  # registered-model names are prefix + lineguard name
        self._client: MlflowClient = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self._last_ns = 0

    @property
    def where(self) -> str:
        return f"MLflow at {mask_url(self._uri)}"

    def _call(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """One client call; MLflow's and the network's failures become one line naming the server."""
        from mlflow.exceptions import MlflowException

        try:
            return fn(*args, **kwargs)
        except (MlflowException, OSError) as exc:
            raise self._failure(exc) from exc

    def _failure(self, exc: BaseException) -> DeliveryError:
        """One line: the server is unreachable (a connection error anywhere in the chain), or what it said."""
        cause: BaseException | None = exc
        while cause is not None:
            if isinstance(cause, OSError):  # requests' connection errors are OSErrors
                return DeliveryError(
                    f"cannot reach {self.where} ({type(cause).__name__}); is the tracking server up "
                    "(registry.uri / --registry-uri)?"
                )
            cause = cause.__cause__ or cause.__context__
        said = str(getattr(exc, "message", "") or exc).splitlines()
        return DeliveryError(f"{self.where} refused a registry call: {said[0][:200] if said else '?'}")

    # -- reading -----------------------------------------------------------------------------
    def _raw(self, name: str | None) -> list[MlflowVersion]:
        """The MLflow versions that are lineguard versions (of ``name``), oldest first."""
        if name is not None and not MODEL_NAME.fullmatch(name):
            return []  # nothing else is ever quoted into a filter
        where = f"name = '{self._prefix}{name}'" if name else None
        found = self._all(self._client.search_model_versions, where)
        ours = [  # names and versions become paths in the local folder: only valid ones are ours
            v
            for v in found
            if v.name.startswith(self._prefix)
            and MODEL_NAME.fullmatch(self._ours(v.name))
            and MODEL_VERSION.fullmatch(v.tags.get(f"{_TAG}version", ""))
        ]
        return sorted(ours, key=lambda v: (v.tags.get(f"{_TAG}added_at", ""), v.name, int(v.version)))

    def _all(self, search: Callable[..., Any], where: str | None) -> list[Any]:
        """Every page of a search (MLflow returns 100 registered models per page by default)."""
        found: list[Any] = []
        token = None
        while True:
            page = self._call(search, where, page_token=token)
            found += list(page)
            token = page.token
            if not token:
                return found

    def _ours(self, registered_name: str) -> str:
        return registered_name.removeprefix(self._prefix)

    def _card(self, raw: MlflowVersion) -> ModelCard:
        """The card from the local cache, downloaded once, and again when the gate replaced it."""
        path = card_location(self._root, self._ours(raw.name), raw.tags[f"{_TAG}version"])
        replaced = raw.tags.get(_CARD_SHA)
        artifact = "model/model_card.json"
        if replaced is not None:
            if not _SHA256.fullmatch(replaced):
                raise self._edited(raw, f"its {_CARD_SHA} tag is not a sha256")
            artifact = f"card/{replaced}/model_card.json"
        if not path.is_file() or (replaced is not None and sha256_file(path) != replaced):
            self._fetch(raw, artifact, path)
            if replaced is not None and sha256_file(path) != replaced:
                raise self._edited(raw, f"its card does not hash to its {_CARD_SHA} tag")
        return ModelCard.load(path)

    def _edited(self, raw: MlflowVersion, what: str) -> ModelError:
        ref = f"{self._ours(raw.name)}:{raw.tags[f'{_TAG}version']}"
        return ModelError(
            f"{ref} in {self.where}: {what}; versions are immutable: register a new version instead of "
            "editing one"
        )

    def _fetch(self, raw: MlflowVersion, artifact: str, dest: Path) -> None:
        """The run's ``artifact`` (a path among its artifacts) into ``dest``."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
            got = self._call(self._client.download_artifacts, raw.run_id, artifact, tmp)
            Path(got).replace(dest)

    def _version(self, raw: MlflowVersion) -> ModelVersion:
        tags = raw.tags
        card = self._card(raw)
        if card.sha256 != tags[f"{_TAG}sha256"]:  # someone edited a tag or an artifact in MLflow
            raise self._edited(raw, f"its card and its {_TAG}sha256 tag disagree")
        return ModelVersion(
            name=self._ours(raw.name),
            version=tags[f"{_TAG}version"],
            sha256=tags[f"{_TAG}sha256"],
            stage=Stage(tags[f"{_TAG}stage"]),
            card=card,
            parent=tags.get(f"{_TAG}parent") or None,
            dataset_hash=tags.get(f"{_TAG}dataset_hash", ""),
            training_run=tags.get(f"{_TAG}training_run", ""),
            added_at=datetime.fromisoformat(tags[f"{_TAG}added_at"]),
            added_by=tags.get(f"{_TAG}added_by", ""),
        )

    def _find(self, name: str, version: str) -> MlflowVersion | None:
        return next((v for v in self._raw(name) if v.tags[f"{_TAG}version"] == version), None)

    def version(self, name: str, version: str) -> ModelVersion | None:
        raw = self._find(name, version)
        return None if raw is None else self._version(raw)

    def versions(self, name: str | None = None) -> list[ModelVersion]:
        return [self._version(v) for v in self._raw(name)]

    def history(self, name: str) -> list[Event]:
        if not MODEL_NAME.fullmatch(name):
            return []
        tagged: list[tuple[str, str]] = [
            (key, value) for v in self._raw(name) for key, value in v.tags.items() if key.startswith(_EVENT)
        ]
        model = self._registered(name)
        if model is not None:
            tagged += [(k, v) for k, v in model.tags.items() if k.startswith(_EVENT)]
        events = []
        for i, (_, value) in enumerate(sorted(tagged), start=1):
            body = json.loads(value)
            events.append(Event(id=i, **{**body, "at": datetime.fromisoformat(body["at"])}))
        return events

    def _registered(self, name: str) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            return self._client.get_registered_model(self._prefix + name)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise self._failure(exc) from exc
        except OSError as exc:
            raise self._failure(exc) from exc

    def stations(self, model: str | None = None) -> list[StationFollow]:
        if model is not None:
            found = [m for m in [self._registered(model)] if m is not None]
        else:
            every = self._all(self._client.search_registered_models, None)
            found = [m for m in every if m.name.startswith(self._prefix)]
        follows = []
        for m in found:
            for entry in json.loads(m.tags.get(_STATIONS, "[]")):
                line, _, station = str(entry).partition("/")
                follows.append(StationFollow(line, station, self._ours(m.name)))
        return sorted(follows, key=lambda s: (s.line, s.station))

    # -- writing -----------------------------------------------------------------------------
    def _event_tag(self, ev: Event) -> tuple[str, str]:
        """A unique, ordered key (nanoseconds, strictly increasing here) and the event's JSON."""
        self._last_ns = max(time.time_ns(), self._last_ns + 1)
        body = {
            "name": ev.name,
            "version": ev.version,
            "action": ev.action,
            "from_stage": ev.from_stage,
            "to_stage": ev.to_stage,
            "who": ev.who,
            "at": ev.at.isoformat(),
            "why": ev.why,
            "detail": ev.detail,
        }
        return f"{_EVENT}{self._last_ns:020d}", json.dumps(body, sort_keys=True)

    def _ensure_model(self, name: str) -> None:
        if self._registered(name) is None:
            self._call(
                self._client.create_registered_model, self._prefix + name, description="lineguard model"
            )

    def _experiment(self) -> str:
        found = self._call(self._client.get_experiment_by_name, EXPERIMENT)
        if found is not None:
            return str(found.experiment_id)
        return str(self._call(self._client.create_experiment, EXPERIMENT))

    def insert(self, mv: ModelVersion, files: Mapping[str, Path], card: Path, event: Event) -> None:
        run = self._call(self._client.create_run, self._experiment(), run_name=mv.ref)
        with tempfile.TemporaryDirectory() as tmp:
            for file, path in files.items():  # model.onnx and the variant files, by their names
                shutil.copyfile(path, Path(tmp) / file)
            shutil.copyfile(card, Path(tmp) / "model_card.json")
            self._call(self._client.log_artifacts, run.info.run_id, tmp, "model")
        self._call(self._client.set_terminated, run.info.run_id)
        self._ensure_model(mv.name)
        key, value = self._event_tag(event)
        tags = {
            f"{_TAG}version": mv.version,
            f"{_TAG}sha256": mv.sha256,
            f"{_TAG}stage": mv.stage.value,
            f"{_TAG}parent": mv.parent or "",
            f"{_TAG}dataset_hash": mv.dataset_hash,
            f"{_TAG}training_run": mv.training_run,
            f"{_TAG}added_at": mv.added_at.isoformat(),
            f"{_TAG}added_by": mv.added_by,
            key: value,
        }
        self._call(
            self._client.create_model_version,
            self._prefix + mv.name,
            f"{run.info.artifact_uri}/model",
            run_id=run.info.run_id,
            tags=tags,
            description=f"lineguard {mv.ref}",
        )
        self._point_aliases([mv.name])

    def change(self, stages: Sequence[tuple[ModelVersion, Stage]], events: Sequence[Event]) -> None:
        names = {mv.name for mv, _ in stages} | {ev.name for ev in events}
        raw = {(name, v.tags[f"{_TAG}version"]): v for name in names for v in self._raw(name)}
        for mv, stage in stages:
            target = raw[(mv.name, mv.version)]
            self._call(
                self._client.set_model_version_tag, target.name, target.version, f"{_TAG}stage", stage.value
            )
        for ev in events:
            key, value = self._event_tag(ev)
            holder = raw.get((ev.name, ev.version))
            if holder is not None:
                self._call(self._client.set_model_version_tag, holder.name, holder.version, key, value)
            else:  # an event about the model, not one version (a station follows it)
                self._ensure_model(ev.name)
                self._call(self._client.set_registered_model_tag, self._prefix + ev.name, key, value)
        if stages:
            self._point_aliases({mv.name for mv, _ in stages})

    def _point_aliases(self, names: Iterable[str]) -> None:
        """Alias ``production``/``staging``/``candidate`` -> the newest version holding the stage."""
        for name in names:
            raw = self._raw(name)
            model = self._registered(name)
            aliases = dict(getattr(model, "aliases", {}) or {})
            for stage in _ALIASED:
                holders = [v for v in raw if v.tags[f"{_TAG}stage"] == stage.value]
                if holders:
                    if aliases.get(stage.value) != holders[-1].version:
                        self._call(
                            self._client.set_registered_model_alias,
                            self._prefix + name,
                            stage.value,
                            holders[-1].version,
                        )
                elif stage.value in aliases:
                    self._call(self._client.delete_registered_model_alias, self._prefix + name, stage.value)

    def follow(self, follow: StationFollow, event: Event) -> None:
        entry = f"{follow.line}/{follow.station}"
        for other in self.stations():  # a station follows one model: leave the old one first
            if (other.line, other.station) == (follow.line, follow.station) and other.model != follow.model:
                model = self._registered(other.model)
                kept = [e for e in json.loads(model.tags.get(_STATIONS, "[]")) if e != entry]
                self._call(
                    self._client.set_registered_model_tag,
                    self._prefix + other.model,
                    _STATIONS,
                    json.dumps(kept),
                )
        self._ensure_model(follow.model)
        model = self._registered(follow.model)
        listed = json.loads(model.tags.get(_STATIONS, "[]"))
        if entry not in listed:
            listed = sorted([*listed, entry])
            self._call(
                self._client.set_registered_model_tag,
                self._prefix + follow.model,
                _STATIONS,
                json.dumps(listed),
            )
        self.change([], [event])

    def download(self, mv: ModelVersion, file: str, dest: Path) -> None:
        raw = self._find(mv.name, mv.version)
        if raw is None:
            raise DeliveryError(f"{mv.ref} is no longer in {self.where}")
        self._fetch(raw, f"model/{file}", dest)

    def replace_card(self, mv: ModelVersion, card: Path, event: Event) -> None:
        """Log ``card`` as ``card/<sha256>/model_card.json`` (the exported one stays) and tag it."""
        raw = self._find(mv.name, mv.version)
        if raw is None or raw.run_id is None:
            raise DeliveryError(f"{mv.ref} is no longer in {self.where}")
        digest = sha256_file(card)
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copyfile(card, Path(tmp) / "model_card.json")
            self._call(
                self._client.log_artifact, raw.run_id, str(Path(tmp) / "model_card.json"), f"card/{digest}"
            )
        self._call(self._client.set_model_version_tag, raw.name, raw.version, _CARD_SHA, digest)
        key, value = self._event_tag(event)
        self._call(self._client.set_model_version_tag, raw.name, raw.version, key, value)

    def attach(self, mv: ModelVersion, kind: str, files: Sequence[Path]) -> None:
        """Log the files as artifacts of the version's run under ``<kind>/<UTC time>/``."""
        raw = self._find(mv.name, mv.version)
        if raw is None or raw.run_id is None:
            raise DeliveryError(f"{mv.ref} is no longer in {self.where}")
        folder = f"{kind}/{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%fZ')}"
        for path in files:
            self._call(self._client.log_artifact, raw.run_id, str(path), folder)
