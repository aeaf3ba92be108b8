"""The artifact server (``lineguard registry serve``): stations fetch model files over HTTP(S) with a token.

Read-only and small on purpose: ``GET /v1/artifacts/<sha256>`` returns an ONNX blob,
``GET /v1/cards/<name>/<version>.json`` a model card, ``GET /v1/models`` the versions and their
stages, ``GET /healthz`` liveness. Everything but ``/healthz`` needs ``Authorization: Bearer
<token>`` (compared in constant time). ``ArtifactServer`` runs uvicorn in a thread so tests and the
demo can start and stop it in-process.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lineguard.errors import ConfigError, DeliveryError
from lineguard.registry.store import Registry
from lineguard.secrets import read_secret

if TYPE_CHECKING:
    import uvicorn
    from fastapi import FastAPI

__all__ = ["ArtifactServer", "create_app", "read_token", "server_config"]

_SHA = re.compile(r"[0-9a-f]{64}")
# A name or version starts with a letter or digit, so '.', '..' and hidden files never match.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}")


def _inside(path: Path, root: Path) -> Path | None:
    """``path`` resolved, or None when it is not a file under ``root`` (a '..' or a link out)."""
    resolved = path.resolve()
    return resolved if resolved.is_relative_to(root.resolve()) and resolved.is_file() else None


def read_token(path: Path | None) -> str:
    """The bearer token from ``path``; refuses a missing, empty or short file (an open server is a bug)."""
    if path is None:
        raise ConfigError("the artifact server needs a token: set registry.token_file (or --token-file)")
    return read_secret(path, "registry.token_file", min_chars=16)


def create_app(registry: Registry, token: str) -> FastAPI:
    """The FastAPI app serving ``registry``'s blobs and cards to holders of ``token``."""
    from fastapi import Depends, FastAPI, Header, HTTPException
    from fastapi.responses import FileResponse, JSONResponse

    app = FastAPI(title="lineguard registry", docs_url=None, redoc_url=None, openapi_url=None)
    expected = f"Bearer {token}".encode()

    # Annotations are strings here (postponed), so only builtins in them: FastAPI resolves them late.
    def authorised(authorization: str = Header(default="")) -> None:
        given = authorization.encode()
        if not secrets.compare_digest(given, expected):
            raise HTTPException(
                status_code=401,
                detail="missing or wrong bearer token",
                headers={"WWW-Authenticate": "Bearer"},
            )

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/artifacts/{sha256}", dependencies=[Depends(authorised)], response_model=None)
    def artifact(sha256: str) -> FileResponse:
        local = registry.artifact_by_sha(sha256) if _SHA.fullmatch(sha256) else None
        path = _inside(local, registry.blobs) if local is not None else None
        if path is None:
            raise HTTPException(status_code=404, detail="no such artifact (a sha256 is 64 hex digits)")
        return FileResponse(path, media_type="application/octet-stream", headers={"X-Sha256": sha256})

    @app.get("/v1/cards/{name}/{version_file}", dependencies=[Depends(authorised)], response_model=None)
    def card(name: str, version_file: str) -> FileResponse:
        version = version_file.removesuffix(".json")
        valid = bool(_NAME.fullmatch(name) and _NAME.fullmatch(version))
        if valid:
            try:  # the back-end caches an MLflow card, and fetches it again once the gate replaced it
                valid = registry.backend.version(name, version) is not None
            except DeliveryError:  # MLflow unreachable: the cached card (stations check its signature)
                valid = registry.card_path(name, version).is_file()
        path = _inside(registry.card_path(name, version), registry.cards) if valid else None
        if path is None:  # the name is not echoed: it is whatever the client sent
            raise HTTPException(status_code=404, detail="no such model card")
        return FileResponse(path, media_type="application/json")

    @app.get("/v1/models", dependencies=[Depends(authorised)], response_model=None)
    def models() -> JSONResponse:
        body: list[dict[str, Any]] = [
            {"name": v.name, "version": v.version, "sha256": v.sha256, "stage": v.stage.value}
            for v in registry.versions()
        ]
        return JSONResponse(body)

    return app


def server_config(
    registry: Registry,
    token: str,
    host: str,
    port: int,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
) -> uvicorn.Config:
    """The one uvicorn set-up of the artifact server: https when ``tls_cert`` and ``tls_key`` are given.

    The files are checked here, so a wrong path is one line naming the option, not a traceback
    from inside uvicorn's start-up.
    """
    import uvicorn

    if (tls_cert is None) != (tls_key is None):
        raise ConfigError("https needs both --tls-cert and --tls-key (PEM files), or neither for plain http")
    for option, path in (("--tls-cert", tls_cert), ("--tls-key", tls_key)):
        if path is not None and not path.is_file():
            raise ConfigError(f"{option} {path} is not a file; give the server's PEM certificate and key")
    return uvicorn.Config(
        create_app(registry, token),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        ssl_certfile=None if tls_cert is None else str(tls_cert),
        ssl_keyfile=None if tls_key is None else str(tls_key),
    )


class ArtifactServer:
    """uvicorn serving ``create_app`` in a background thread; ``url`` once started."""

    def __init__(
        self,
        registry: Registry,
        token: str,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
    ) -> None:
        import uvicorn

        config = server_config(registry, token, host, port, tls_cert, tls_key)
        self._server: uvicorn.Server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="registry-serve", daemon=True)
        self.host = host
        self.port = port
        self.scheme = "http" if tls_cert is None else "https"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    def start(self, timeout_s: float = 10.0) -> ArtifactServer:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ConfigError(f"artifact server did not start on {self.host}:{self.port}")
            time.sleep(0.02)
        sockets = [s for srv in self._server.servers for s in srv.sockets]
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self) -> ArtifactServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
