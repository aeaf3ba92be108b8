"""The scale check of canary rollouts (issue 22): a fleet of real station processes on one broker.

One Mosquitto with the project's ACL (every station logs in as itself, the registry as
``registry``, the recorder as ``monitor``), one file registry and ``LINEGUARD_FLEET_STATIONS``
(default 20) ``lineguard edge run`` processes judging the synthetic line at 2 fps with a tiny
signed model. A good version reaches every station through the canary stage; a bad one (it FAILs
every unit) is halted at the canaries and rolled back, and no other station ever runs it or is
ever sent it. The figures of this run are written by ``lineguard bench fleet``, not here.
"""

from __future__ import annotations

import os
from pathlib import Path

from support.mosquitto import Broker
from support.tls import password_file

from lineguard.benchmarks.fleet import GOOD_V1, GOOD_V2, MODEL, run_fleet_check

ACL = Path(__file__).parents[2] / "deploy" / "mosquitto" / "acl"


def test_a_good_version_reaches_the_fleet_through_canaries_and_a_bad_one_never_leaves_them(
    tmp_path: Path,
) -> None:
    count = int(os.environ.get("LINEGUARD_FLEET_STATIONS", "20"))
    users = [f"s{i:02d}" for i in range(1, count + 1)] + ["registry", "monitor"]
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for user in users:
        (secrets / user).write_text(f"{user}-pw\n")
    passwd = password_file(tmp_path / "passwd", {u: f"{u}-pw" for u in users})
    broker = Broker(
        tmp_path / "broker", extra_conf=f"allow_anonymous false\npassword_file {passwd}\nacl_file {ACL}\n"
    ).start()

    def login(user: str) -> dict[str, str]:
        return {"username": user, "password_file": str(secrets / user)}

    try:
        report = run_fleet_check(
            tmp_path / "fleet",
            broker.port,
            stations=count,
            mqtt_for=login,
            registry_mqtt=login("registry"),
            monitor_mqtt=login("monitor"),
        )
    finally:
        broker.stop()
    print(f"\nseconds from the fleet's start at which each station first reported {MODEL} versions:")
    print("\n".join(report.lines()))

    assert not report.good_halted
    assert all(GOOD_V2 in took for took in report.timeline.values()) and len(report.timeline) == count
    assert all(took[GOOD_V1] < took[GOOD_V2] for took in report.timeline.values())
    canaries = set(report.canaries_good)
    last_canary = max(report.timeline[c][GOOD_V2] for c in canaries)
    rest = [s for s in report.timeline if s not in canaries]
    assert rest and min(report.timeline[s][GOOD_V2] for s in rest) > last_canary  # canaries first

    assert report.bad_halted and "FAIL rate 100.0%" in report.bad_reason
    assert report.ran_bad and set(report.ran_bad) <= set(report.canaries_bad)
    assert report.announced_bad == sorted(f"lineguard/{c}/model" for c in report.canaries_bad)
    assert len(report.canaries_bad) == max(1, -(-count * 15 // 100))
