"""A PLC stand-in: an asyncua client run as its own process (``python opcua_client.py REQUEST_JSON``).

It connects to a station's OPC UA server, optionally watches ``VerdictJson`` for a while at a 1 ms
publishing interval, reads every variable, calls ``Trigger`` for each unit id asked for, and prints
one JSON object: ``{"values": {...}, "seen": [verdict json, ...], "triggers": [[...] or "Bad..."]}``
or ``{"error": "..."}`` when the connection is refused.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
from pathlib import Path
from typing import Any

from asyncua.client.client import Client
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256

ua: Any = importlib.import_module("asyncua.ua")  # untyped: its stubs do not export what is used here

NAMES = (
    "VerdictJson",
    "UnitId",
    "Seq",
    "Verdict",
    "Reason",
    "PassCount",
    "FailCount",
    "NoDecisionCount",
    "Ready",
    "Status",
    "ModelVersion",
)


class _Watch:
    def __init__(self) -> None:
        self.seen: list[str] = []

    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        if val:
            self.seen.append(val)


async def _session(request: dict[str, Any], client: Client) -> dict[str, Any]:
    idx = await client.get_namespace_index(request["namespace"])
    where = request["station"]

    def node(name: str) -> Any:
        return client.get_node(ua.NodeId(f"{where}/{name}", idx))

    watch = _Watch()
    if request.get("watch_s"):
        sub = await client.create_subscription(1, watch)
        await sub.subscribe_data_change(node("VerdictJson"))
        await asyncio.sleep(request["watch_s"])
        await sub.delete()
    triggers: list[Any] = []
    station = client.get_node(ua.NodeId(where, idx))
    for unit_id in request.get("triggers", []):
        try:
            triggers.append(await station.call_method(ua.NodeId(f"{where}/Trigger", idx), unit_id))
        except ua.UaStatusCodeError as exc:
            triggers.append(type(exc).__name__)  # BadInvalidArgument, BadTimeout, ...
    values = {name: await node(name).read_value() for name in NAMES}
    return {"values": values, "seen": watch.seen, "triggers": triggers}


async def main(request: dict[str, Any]) -> dict[str, Any]:
    client = Client(request["url"], timeout=10)
    if request.get("username"):
        client.set_user(request["username"])
        client.set_password(request["password"])
    if request.get("server_cert"):
        client.application_uri = "urn:lineguard:test:plc"
        await client.set_security(
            SecurityPolicyBasic256Sha256,
            certificate=request["client_cert"],
            private_key=request["client_key"],
            server_certificate=request["server_cert"],
            mode=ua.MessageSecurityMode.SignAndEncrypt,
        )
    try:
        await client.connect()
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    try:
        return await _session(request, client)
    finally:
        await client.disconnect()


if __name__ == "__main__":
    result = asyncio.run(main(json.loads(Path(sys.argv[1]).read_text())))
    print(json.dumps(result, default=str))
