"""A PLC over OPC UA: an asyncua client in another process against a station on the synthetic line."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from support.mosquitto import free_port
from support.mqtt import wait_until
from support.signal_model import build_signal_onnx
from support.stations import running_station

from lineguard.config import load_config
from lineguard.edge.daemon import EdgeDaemon
from lineguard.errors import ConfigError

pytest.importorskip("asyncua")

CLIENT = Path(__file__).parents[1] / "support" / "opcua_client.py"
NAMESPACE = "urn:lineguard:test"


@pytest.fixture(scope="module")
def signal_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model that FAILs the synthetic line's defective units, so both verdicts show up."""
    out = tmp_path_factory.mktemp("signal")
    build_signal_onnx(out, contrast=0.19)
    return out


def plc(tmp_path: Path, port: int, **request: Any) -> dict[str, Any]:
    """Run the client script in its own interpreter and return what it printed."""
    body = {"url": f"opc.tcp://127.0.0.1:{port}", "namespace": NAMESPACE, "station": "line1/s1", **request}
    path = tmp_path / f"request-{free_port()}.json"
    path.write_text(json.dumps(body))
    done = subprocess.run(
        [sys.executable, str(CLIENT), str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _opcua(port: int, **extra: Any) -> dict[str, Any]:
    return {"enabled": True, "port": port, "namespace": NAMESPACE, **extra}


def test_a_plc_sees_verdicts_counters_model_and_triggers_a_unit(tmp_path: Path, signal_model: Path) -> None:
    port = free_port()
    with running_station(tmp_path / "var", signal_model, opcua=_opcua(port)) as (daemon, base):
        seen = plc(tmp_path, port, watch_s=1.5, triggers=["plc-unit-7", "bad\nid", ""])
        record = {
            json.loads(line)["seq"]: json.loads(line)
            for line in (tmp_path / "var" / "verdicts.jsonl").read_text().splitlines()
        }
        status = httpx.get(f"{base}/v1/status").json()
        units_after = daemon.summary.units
        assert daemon.slot is not None
        model = f"{daemon.slot.ref.name}:{daemon.slot.ref.version}"
    assert "error" not in seen
    mirrored = [json.loads(text) for text in seen["seen"]]
    assert len(mirrored) >= 10  # 20 units/s for 1.5 s
    seqs = [v["seq"] for v in mirrored]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert all(record[v["seq"]] == v for v in mirrored)  # the mirror says what the record says
    assert {v["verdict"] for v in mirrored} >= {"PASS", "FAIL"}
    values = seen["values"]
    assert values["ModelVersion"] == model
    counted = values["PassCount"] + values["FailCount"] + values["NoDecisionCount"]
    assert 0 < counted <= units_after
    assert values["PassCount"] > 0 and values["FailCount"] > 0
    assert values["Ready"] is True and values["Status"] == "ready"
    verdict, reason, seq, verdict_json = seen["triggers"][0]
    triggered = json.loads(verdict_json)
    assert triggered["unit_id"] == "plc-unit-7"
    assert (triggered["verdict"], triggered["reason"], triggered["seq"]) == (verdict, reason, seq)
    assert record[seq]["unit_id"] == "plc-unit-7"
    assert seen["triggers"][1:] == ["BadInvalidArgument", "BadInvalidArgument"]
    assert status["opcua"]["state"] == "running"
    assert status["opcua"]["endpoint"] == f"opc.tcp://127.0.0.1:{port}"


def test_a_taken_port_degrades_the_station_it_keeps_inspecting(tmp_path: Path, signal_model: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with running_station(tmp_path / "var", signal_model, opcua=_opcua(port)) as (daemon, base):
            units = daemon.summary.units
            wait_until(lambda: daemon.summary.units > units + 5, 15, "units after the OPC UA fault")
            status = httpx.get(f"{base}/v1/status").json()
            metrics = httpx.get(f"{base}/metrics").text
    assert status["opcua"]["state"] == "failed"
    assert "\n" not in status["opcua"]["detail"]
    assert "lineguard_opcua_up 0.0" in metrics
    assert 'lineguard_alerts_total{kind="opcua"} 1.0' in metrics


def test_production_without_opcua_credentials_is_refused_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(
            None,
            environ={},
            overrides={
                "station": {"profile": "production"},
                "mqtt": {"enabled": False},
                "http": {"enabled": False},
                "registry": {"public_keys": [str(tmp_path / "key.pub")]},
                "opcua": {"enabled": True},
            },
        )
    message = str(caught.value)
    assert "\n" not in message
    assert (
        "opcua.security: Basic256Sha256_SignAndEncrypt (opcua.cert_file + opcua.key_file), "
        "opcua.username + opcua.password_file" in message
    )


def test_a_missing_opcua_password_file_is_refused_in_one_line(tmp_path: Path, signal_model: Path) -> None:
    cfg = load_config(
        None,
        environ={},
        overrides={
            "station": {"data_dir": str(tmp_path / "var")},
            "model": {"path": str(signal_model / "model.onnx")},
            "mqtt": {"enabled": False},
            "opcua": _opcua(free_port(), username="plc", password_file=str(tmp_path / "nope")),
        },
    )
    with pytest.raises(ConfigError, match=r"opcua.password_file .* file not found") as caught:
        EdgeDaemon(cfg)
    assert "\n" not in str(caught.value)


def _certificate(folder: Path, name: str, uri: str, usage: x509.ObjectIdentifier) -> tuple[Path, Path]:
    """A self-signed OPC UA application certificate (DER) and its key (PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, True, True, True, False, False, False, False, False), critical=True
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / f"{name}.der", folder / f"{name}.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def test_encrypted_endpoint_takes_the_right_password_and_refuses_a_wrong_one(
    tmp_path: Path, signal_model: Path
) -> None:
    server_cert, server_key = _certificate(
        tmp_path, "station", "urn:lineguard:station:line1:s1", ExtendedKeyUsageOID.SERVER_AUTH
    )
    client_cert, client_key = _certificate(
        tmp_path, "plc", "urn:lineguard:test:plc", ExtendedKeyUsageOID.CLIENT_AUTH
    )
    password = tmp_path / "opcua-password"
    password.write_text("s3cret-for-the-plc\n")
    port = free_port()
    secure = {
        "security": "Basic256Sha256_SignAndEncrypt",
        "username": "plc",
        "password_file": str(password),
        "cert_file": str(server_cert),
        "key_file": str(server_key),
    }
    keys = {"server_cert": str(server_cert), "client_cert": str(client_cert), "client_key": str(client_key)}
    with running_station(tmp_path / "var", signal_model, opcua=_opcua(port, **secure)):
        right = plc(tmp_path, port, username="plc", password="s3cret-for-the-plc", **keys)
        wrong = plc(tmp_path, port, username="plc", password="guess", **keys)
        plain = plc(tmp_path, port)  # no encryption, anonymous
    assert "error" not in right, right
    assert right["values"]["Seq"] > 0
    assert "BadUserAccessDenied" in wrong["error"] or "BadIdentityTokenRejected" in wrong["error"], wrong
    assert "error" in plain
