"""The station page at ``/``, its live view and the status figures it shows.

A line engineer opens the station's address in a browser and sees what the camera sees (the
latest decided frame with its boxes, ``/v1/live.mjpeg``), the verdicts as they come, the counters,
the model, camera, broker and drift state, and the recent FAIL / NO_DECISION units. Everything it
loads ships in the package (``edge/static``): a station on a shop-floor network reaches no CDN.

Auth in production: the page itself holds no data and loads without the token; it asks for the
token once, keeps it in the tab's ``sessionStorage`` and sends it as ``Authorization: Bearer`` on
every API call. An ``<img>`` cannot send headers, so the live routes also accept ``?token=``,
compared in constant time and never logged (uvicorn's access log is off).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from lineguard.edge.live import LiveFrame, LiveView

if TYPE_CHECKING:
    from lineguard.edge.station import Station
    from lineguard.monitoring import DriftMonitor

__all__ = ["STATIC_DIR", "add_page_routes", "status_extras"]

STATIC_DIR = Path(__file__).parent / "static"
MAX_LIVE_VIEWERS = 8  # each stream costs a little encoding; a station is not a video server
_SNAPSHOT_WAIT_S = 2.0
_BOUNDARY = "frame"
# The page's scripts and styles are files of its own: no inline code, nothing from elsewhere.
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}
_NO_STORE = {"Cache-Control": "no-store"}


def add_page_routes(app: FastAPI, station: Station, *, image_auth: list[Any]) -> None:
    """``/``, ``/static/…`` and the live routes; ``image_auth`` guards the live routes (header or query)."""
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=_PAGE_HEADERS)

    _add_live_routes(app, station, image_auth)


def _add_live_routes(app: FastAPI, station: Station, auth: list[Any]) -> None:
    viewers = _Viewers()
    jpeg: dict[int | str, dict[str, Any]] = {
        200: {"content": {"image/jpeg": {}}, "description": "The latest decided frame, annotated."}
    }

    @app.get(
        "/v1/live.jpg",
        tags=["station"],
        dependencies=auth,
        response_class=Response,
        responses={**jpeg, 404: {"description": "No unit decided since someone started watching."}},
    )
    async def live_jpg() -> Response:
        """One JPEG of the latest decided frame with its boxes and verdict (a still of the live view)."""
        frame = await _fresh_frame(station.live)
        if frame is None:
            raise HTTPException(404, "no unit decided since the live view was opened; is the camera running?")
        data = await run_in_threadpool(station.live.jpeg, frame)
        return Response(data, media_type="image/jpeg", headers=_NO_STORE)

    @app.get(
        "/v1/live.mjpeg",
        tags=["station"],
        dependencies=auth,
        response_class=StreamingResponse,
        responses={
            200: {"content": {f"multipart/x-mixed-replace; boundary={_BOUNDARY}": {}}},
            503: {"description": f"Already {MAX_LIVE_VIEWERS} live viewers."},
        },
    )
    async def live_mjpeg() -> StreamingResponse:
        """MJPEG of the latest decided frames, at most ``http.live_fps`` a second, while the station runs."""
        if viewers.count >= MAX_LIVE_VIEWERS:
            raise HTTPException(503, f"already {MAX_LIVE_VIEWERS} live viewers; close one and retry")
        return StreamingResponse(
            _mjpeg(station, viewers),
            media_type=f"multipart/x-mixed-replace; boundary={_BOUNDARY}",
            headers=_NO_STORE,
        )


class _Viewers:
    """Open MJPEG streams (only the event loop thread touches it)."""

    count = 0


async def _fresh_frame(live: LiveView) -> LiveFrame | None:
    """A frame copied since this request asked (waits up to 2 s for the next unit), else the last one."""
    live.want()
    asked = time.monotonic()
    while True:
        frame = live.latest()
        if frame is not None and frame.copied_mono >= asked - live.period_s:
            return frame
        if time.monotonic() - asked > _SNAPSHOT_WAIT_S:
            return frame
        await asyncio.sleep(0.02)


async def _mjpeg(station: Station, viewers: _Viewers) -> AsyncIterator[bytes]:
    """Parts of a ``multipart/x-mixed-replace`` stream; ends when the station stops."""
    live = station.live
    viewers.count += 1
    sent = 0
    try:
        while station.running:
            live.want()
            frame = live.latest()
            if frame is not None and frame.version != sent:
                data = await run_in_threadpool(live.jpeg, frame)
                sent = frame.version
                head = f"--{_BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(data)}\r\n\r\n"
                yield head.encode() + data + b"\r\n"
            await asyncio.sleep(live.period_s)
    finally:
        viewers.count -= 1


def status_extras(station: Station) -> dict[str, Any]:
    """What the page shows beyond ``…/status``: counters, drift, broker and the model's precision.

    Kept out of the MQTT status message (its schema is a contract of its own); ``/v1/status`` adds it.
    """
    slot = station.slot
    return {
        "station": f"{station.cfg.station.line}/{station.cfg.station.station}",
        "counters": station.counters(),
        "drift": None if slot is None else _drift_state(slot.drift),
        "broker": _broker_state(station),
        "opcua": station.opcua_status(),
        "precision": None if slot is None else slot.detector.precision,
        "computed_in": None if slot is None else slot.detector.inference_precision,
        "precision_choice": None if slot is None else slot.detector.precision_choice,
    }


def _drift_state(drift: DriftMonitor) -> dict[str, Any]:
    levels, scores = drift.levels, drift.scores
    order = ("ok", "warning", "alarm")
    worst = max(levels.values(), key=order.index, default="ok")
    signals = {name: {"level": level, "score": round(scores[name], 4)} for name, level in levels.items()}
    return {"level": worst, "units": drift.units, "signals": signals}


def _broker_state(station: Station) -> dict[str, Any]:
    mqtt = station.cfg.mqtt
    if not mqtt.enabled:
        detail = "MQTT off (mqtt.enabled: false): verdicts go to a JSON-lines file"
        return {"connected": False, "detail": detail}
    ok, why = station.delivery.readiness()
    return {"connected": ok, "detail": f"connected to {mqtt.host}:{mqtt.port}" if ok else why}
