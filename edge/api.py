"""The station's HTTP API (FastAPI): health, readiness, metrics, the model in use, and inspect-an-image.

Orchestrators probe ``/healthz`` (the process answers) and ``/readyz`` (model loaded, camera up,
delivery ready; 503 with the reasons otherwise); Prometheus scrapes ``/metrics``. ``POST
/v1/inspect`` judges an uploaded JPEG/PNG (raw body or multipart ``file``) as one unit, or, with
no image, the next camera frame; its verdict is committed and published like any other. Uploads
are bounded (413), typed (415), their header's pixel count checked (413) and decoded off the
event loop (422) before the model sees them. ``POST /v1/inspect`` needs ``Authorization: Bearer
<token>`` when ``http.token_file`` is set; in the production profile so does everything but the
probes (the live image routes also take ``?token=``, for an ``<img>``), and the docs pages are off.
Probes never need it. ``/`` is the station page (``lineguard.edge.page``); ``/docs`` serves Swagger
UI from the installed ``fastapi-offline`` package, so it works without a network. ``GET /v1/verdicts``
lists recent verdicts (filter by verdict and reason, page with ``before_seq``), ``/v1/verdicts/{seq}``
gives one and ``/v1/verdicts/{seq}/image`` the frame behind it (``?annotated=true`` draws the
boxes), from the station's frame store.
``create_app`` builds the app over a ``Station`` (the daemon), so tests drive it without a port;
``ApiServer`` runs it with uvicorn on a thread of the daemon.
"""

from __future__ import annotations

import asyncio
import hmac
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import numpy.typing as npt
from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from lineguard import __version__
from lineguard.config import Profile
from lineguard.edge.control import Trigger
from lineguard.edge.outbox import OutboxFullError
from lineguard.edge.page import add_page_routes, status_extras
from lineguard.edge.station import trigger_wait_s
from lineguard.errors import ConfigError, InputError
from lineguard.inference import ImageTooLargeError, UnknownImageFormatError, decode_image
from lineguard.messages import Reason, VerdictKind, is_unit_id
from lineguard.secrets import read_secret

if TYPE_CHECKING:
    from lineguard.edge.station import Station

__all__ = ["ApiServer", "create_app"]

_IMAGE_TYPES = {"image/jpeg", "image/jpg", "image/png"}
_MULTIPART_SLACK = 64 * 1024  # boundaries and part headers around the file

_INSPECT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "description": "A JPEG or PNG image as the raw body, or multipart with a `file` part and an "
        "optional `unit_id` field. No body: inspect the next camera frame.",
        "content": {
            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
            "image/png": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "unit_id": {"type": "string"},
                    },
                }
            },
        },
    }
}


def _read_token(daemon: Station) -> str | None:
    path = daemon.cfg.http.token_file
    return None if path is None else read_secret(path, "http.token_file")


def _bearer_guard(token: str | None, *, query: bool = False) -> Callable[[Request], Awaitable[None]]:
    """``Authorization: Bearer``; with ``query`` also ``?token=``, for an ``<img>`` (it sends no headers)."""

    async def guard(request: Request) -> None:
        if token is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode()):
            return
        in_query = request.query_params.get("token", "") if query else ""
        if not (in_query and hmac.compare_digest(in_query.encode(), token.encode())):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    return guard


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"upload of {declared} bytes exceeds http.max_upload_bytes ({limit})")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"upload exceeds http.max_upload_bytes ({limit})")
        chunks.append(chunk)
    return b"".join(chunks)


async def _image_from_request(request: Request, limit: int) -> tuple[bytes | None, str | None]:
    """``(image bytes or None, unit_id from the form or None)``; raises 413/415/422."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    multipart = ctype == "multipart/form-data"
    body = await _read_body(request, limit + (_MULTIPART_SLACK if multipart else 0))
    if not body:
        return None, None
    if ctype in _IMAGE_TYPES:
        return body, None
    if not multipart:
        raise HTTPException(
            415, f"content type {ctype or 'none'!r} is not image/jpeg, image/png or multipart"
        )

    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    form = await Request(request.scope, replay).form()
    try:
        unit_id = form.get("unit_id")
        upload = form.get("file")
        if upload is None:
            return None, unit_id if isinstance(unit_id, str) else None
        if not isinstance(upload, UploadFile):
            raise HTTPException(422, "multipart field 'file' must be a file")
        part_type = (upload.content_type or "").lower()
        if part_type not in _IMAGE_TYPES | {"application/octet-stream", ""}:
            raise HTTPException(415, f"file content type {part_type!r} is not image/jpeg or image/png")
        data = await upload.read()
    finally:
        await form.close()
    if len(data) > limit:
        raise HTTPException(413, f"upload of {len(data)} bytes exceeds http.max_upload_bytes ({limit})")
    return data, unit_id if isinstance(unit_id, str) else None


def create_app(daemon: Station) -> FastAPI:
    """The API over one station; reads the token file now, so a bad one fails at start-up.

    In the production profile every route but the probes needs the token, and the docs pages
    are off (the schema is in ``schemas/`` and the README). Elsewhere they load Swagger UI and
    ReDoc from the installed package, never from a CDN.
    """
    production = daemon.cfg.station.profile is Profile.PRODUCTION
    meta: dict[str, Any] = {
        "title": "lineguard edge",
        "version": __version__,
        "description": "Inspection station API: probes, metrics, model in use, inspect an image, "
        "the station page and its live view.",
    }
    if production:
        app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None, **meta)
    else:
        app = FastAPIOffline(**meta)
    token = _read_token(daemon)
    auth = Depends(_bearer_guard(token))
    image_auth = Depends(_bearer_guard(token, query=True))
    _add_probe_routes(app, daemon)
    _add_station_routes(app, daemon, [auth] if production else [])
    _add_verdict_routes(app, daemon, [auth] if production else [])
    _add_inspect_route(app, daemon, auth)
    add_page_routes(app, daemon, image_auth=[image_auth] if production else [])
    return app


def _add_probe_routes(app: FastAPI, station: Station) -> None:
    """What orchestrators and Prometheus poll; never behind the token."""

    @app.get("/healthz", tags=["probes"])
    def healthz() -> dict[str, str]:
        """The process is alive (no dependency is checked)."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["probes"], responses={503: {"description": "Not ready; `reasons` say why."}})
    def readyz() -> JSONResponse:
        """Ready to inspect: model loaded, camera up, delivery ready, outbox not full."""
        ready, reasons = station.readiness()
        return JSONResponse({"ready": ready, "reasons": reasons}, status_code=200 if ready else 503)

    @app.get("/metrics", tags=["probes"], response_class=Response)
    def metrics() -> Response:
        """Prometheus text exposition of every lineguard metric."""
        return Response(station.metrics.render(), media_type=CONTENT_TYPE_LATEST)


def _add_station_routes(app: FastAPI, station: Station, auth: list[Any]) -> None:
    """Read-only views of the station: its status and the model deciding units (token in production)."""

    @app.get("/v1/status", tags=["station"], dependencies=auth)
    def status() -> dict[str, Any]:
        """``…/status`` (model, backend, camera, fps) plus counters, drift, broker and precision."""
        return station.status() | status_extras(station)

    @app.get("/v1/model", tags=["station"], dependencies=auth)
    def model() -> dict[str, Any]:
        """The model card summary of the model deciding units (``loaded: false`` when none)."""
        return _model_summary(station)


MAX_VERDICTS = 500  # one page of GET /v1/verdicts
_Seq = Annotated[int, Path(ge=1, le=2**63 - 1, description="The verdict's seq.")]
_NOT_KEPT = "no such verdict or frame in the frame store (it keeps recent ones within its limits)"


def _add_verdict_routes(app: FastAPI, station: Station, auth: list[Any]) -> None:
    """Recent verdicts and the frames behind them, from the frame store (token in production)."""

    @app.get("/v1/verdicts", tags=["verdicts"], dependencies=auth)
    def verdicts(
        limit: Annotated[
            int, Query(ge=1, le=MAX_VERDICTS, description="At most this many, newest first.")
        ] = 50,
        verdict: Annotated[VerdictKind | None, Query(description="Only this verdict.")] = None,
        reason: Annotated[Reason | None, Query(description="Only this reason.")] = None,
        before_seq: Annotated[
            int | None, Query(ge=1, description="Only seqs below this (next page).")
        ] = None,
    ) -> dict[str, list[dict[str, Any]]]:
        """Recent verdicts, newest first; ``image`` names the frame while the station keeps it."""
        store = station.frame_store
        if store is None:
            return {"verdicts": []}
        kind = verdict.value if verdict is not None else None
        why = reason.value if reason is not None else None
        return {"verdicts": store.recent(limit, kind, why, before_seq)}

    @app.get("/v1/verdicts/{seq}", tags=["verdicts"], dependencies=auth, responses={404: {}})
    def verdict_by_seq(seq: _Seq) -> dict[str, Any]:
        """One recent verdict (lineguard.verdict/1), with ``image`` while its frame is kept."""
        found = None if station.frame_store is None else station.frame_store.get(seq)
        if found is None:
            raise HTTPException(404, _NOT_KEPT)
        return found

    @app.get(
        "/v1/verdicts/{seq}/image",
        tags=["verdicts"],
        dependencies=auth,
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {}}}, 404: {}},
    )
    def verdict_image(
        seq: _Seq,
        annotated: Annotated[
            bool, Query(description="Draw boxes, class, confidence and the verdict.")
        ] = False,
    ) -> Response:
        """The frame behind a verdict as JPEG, as the camera saw it or annotated."""
        jpeg = None if station.frame_store is None else station.frame_store.image(seq, annotated)
        if jpeg is None:
            raise HTTPException(404, _NOT_KEPT)
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


def _model_summary(station: Station) -> dict[str, Any]:
    slot = station.slot
    if slot is None:
        return {"loaded": False, "error": station.model_error}
    card = slot.detector.card
    return {
        "loaded": True,
        "name": card.name,
        "version": card.version,
        "sha256": card.sha256,
        "classes": card.classes,
        "input_size": card.input_size,
        "thresholds": card.thresholds,
        "thresholds_id": slot.policy.thresholds_id,
        "backend": slot.detector.backend,
        "created_at": card.created_at.isoformat() if card.created_at else None,
        "parent": card.parent,
    }


def _add_inspect_route(app: FastAPI, station: Station, auth: Any) -> None:
    """``POST /v1/inspect``: an uploaded image, or the next camera frame, judged as one unit."""
    limit = station.cfg.http.max_upload_bytes

    @app.post(
        "/v1/inspect",
        tags=["inspection"],
        dependencies=[auth],
        openapi_extra=_INSPECT_BODY,
        responses={
            200: {"description": "The verdict (lineguard.verdict/1)."},
            401: {"description": "Missing or wrong bearer token."},
            413: {"description": "Over http.max_upload_bytes, or header over camera.max_image_pixels."},
            415: {"description": "Not JPEG, PNG or multipart, or an unknown image header."},
            422: {"description": "Undecodable image or bad unit_id."},
            503: {"description": "Outbox full, or (camera unit) inspection not running."},
            504: {"description": "(camera unit) no verdict in time."},
        },
    )
    async def inspect(request: Request, unit_id: str | None = None) -> Response:
        """Judge an uploaded image (or, with no body, the next camera frame) as one unit."""
        data, form_unit = await _image_from_request(request, limit)
        unit = form_unit or unit_id
        if unit is not None and not is_unit_id(unit):
            raise HTTPException(422, "unit_id must be 1-128 printable characters")
        if data is None:
            return await _inspect_camera(station, unit)
        return await _inspect_upload(station, data, unit)


def _decode_upload(data: bytes, max_pixels: int) -> npt.NDArray[np.uint8]:
    """The upload decoded, its header size checked first: 413 too many pixels, 415 unknown, 422 corrupt."""
    try:
        return decode_image(data, max_pixels)
    except ImageTooLargeError as exc:
        raise HTTPException(413, str(exc)) from exc
    except UnknownImageFormatError as exc:
        raise HTTPException(415, f"{exc}; send a JPEG or PNG") from exc
    except InputError as exc:
        raise HTTPException(422, str(exc)) from exc


async def _inspect_upload(station: Station, data: bytes, unit: str | None) -> Response:
    if not data:
        raise HTTPException(422, "the uploaded image is empty (0 bytes)")
    # Decoding a large image takes a while: off the event loop, so the probes keep answering.
    image = await run_in_threadpool(_decode_upload, data, station.cfg.camera.max_image_pixels)
    try:
        verdict = await run_in_threadpool(station.inspect_image, image, unit)
    except OutboxFullError as exc:
        raise HTTPException(503, str(exc)) from exc
    return Response(verdict.to_json(), media_type="application/json")


async def _inspect_camera(station: Station, unit_id: str | None) -> Response:
    if not station.running:
        raise HTTPException(503, "the inspection loop is not running; send an image instead")
    future = station.trigger(Trigger(unit_id=unit_id or f"http-{time.time_ns()}"))
    try:
        wait_s = trigger_wait_s(station.cfg.camera.watchdog_s)
        verdict = await asyncio.wait_for(asyncio.wrap_future(future), wait_s)
    except TimeoutError as exc:
        raise HTTPException(504, "no verdict for the camera unit in time") from exc
    except OutboxFullError as exc:
        raise HTTPException(503, str(exc)) from exc
    return Response(verdict.to_json(), media_type="application/json")


class ApiServer:
    """uvicorn serving an app on a daemon thread; ``port`` is the bound one (config port 0 = any)."""

    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        import uvicorn

        config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="lineguard-http", daemon=True)
        self.port = port

    def start(self, timeout_s: float = 10.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ConfigError(
                    f"HTTP API could not listen on {self._server.config.host}:{self._server.config.port}; "
                    "is the port in use? change http.port"
                )
            time.sleep(0.02)
        sockets = [s for server in self._server.servers for s in server.sockets]
        if sockets:
            self.port = int(sockets[0].getsockname()[1])

    def stop(self, timeout_s: float = 5.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout_s)
