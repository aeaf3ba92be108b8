"""Throw-away PKI for TLS tests: a CA, a server cert for 127.0.0.1 and a client cert, via openssl.

Made at test time (nothing secret is committed) with the ``openssl`` CLI, which Debian ships with
Mosquitto; ``mosquitto_conf_tls`` writes the listener lines a ``Broker`` adds to its config.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Pki", "make_pki", "mosquitto_tls_listener", "password_file"]


@dataclass(frozen=True)
class Pki:
    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _signed(name: str, subject: str, ext: str, out: Path) -> tuple[Path, Path]:
    key, csr, cert, extfile = (out / f"{name}.{s}" for s in ("key", "csr", "crt", "ext"))
    _openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-subj", subject,
             "-out", str(csr), cwd=out)  # fmt: skip
    extfile.write_text(ext)
    _openssl("x509", "-req", "-in", str(csr), "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "2", "-sha256", "-extfile", str(extfile), "-out", str(cert), cwd=out)  # fmt: skip
    return cert, key


def make_pki(out: Path, ca_name: str = "lineguard test CA") -> Pki:
    if shutil.which("openssl") is None:
        raise RuntimeError("openssl is not installed: apt-get install -y openssl")
    out.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
             "-days", "2", "-subj", f"/CN={ca_name}",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign",
             cwd=out)  # fmt: skip
    server = _signed(
        "server",
        "/CN=localhost",
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        out,
    )
    client = _signed("client", "/CN=lineguard-edge", "extendedKeyUsage=clientAuth\n", out)
    return Pki(out / "ca.crt", *server, *client)


def password_file(path: Path, users: dict[str, str]) -> Path:
    """A Mosquitto password file (hashed by ``mosquitto_passwd``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    first = True
    for user, password in users.items():
        flags = ["-b", "-c"] if first else ["-b"]
        subprocess.run(
            ["mosquitto_passwd", *flags, str(path), user, password], check=True, capture_output=True
        )
        first = False
    return path


def mosquitto_tls_listener(
    port: int, pki: Pki, *, passwords: Path | None = None, require_certificate: bool = False
) -> str:
    """Config lines for a TLS listener on ``port``; with ``passwords`` nobody gets in anonymously."""
    lines = [
        f"listener {port} 127.0.0.1",
        f"cafile {pki.ca_cert}",
        f"certfile {pki.server_cert}",
        f"keyfile {pki.server_key}",
        f"require_certificate {'true' if require_certificate else 'false'}",
    ]
    if passwords is not None:
        # Global options: they also lock the fixture's plaintext listener, as a plant broker would.
        lines = ["allow_anonymous false", f"password_file {passwords}", *lines]
    return "\n".join(lines) + "\n"
