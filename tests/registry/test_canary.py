"""Canary rollouts: the plan, the guard rails, and the two waves over a real broker.

The end-to-end tests here play the stations with small MQTT peers (``SimStation``: they take the
version the registry publishes to them, report it in a retained status and publish verdicts
decided by it), so the whole rollout runs in seconds; tests/registry/test_fleet.py does the same
with real station processes.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from support.mosquitto import Broker
from support.mqtt import wait_until

from lineguard.config import CanaryPlan, MqttConfig, load_plan
from lineguard.errors import ConfigError, InputError
from lineguard.messages import (
    DesiredModel,
    Feedback,
    ModelRef,
    Reason,
    StationStatus,
    Verdict,
    VerdictKind,
    build_alert,
    utc_now,
)
from lineguard.registry import Registry, StationFollow
from lineguard.registry.canary import judge, pick_canaries
from lineguard.registry.fleet_watch import FleetWatch, Tally

SHA = "a" * 64


def _plan(**canary: object) -> CanaryPlan:
    return CanaryPlan.model_validate({"canary": canary or {"fraction": 0.2}})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("canary: {stations: [line1/s1], fraction: 0.2}\n", "exactly one of them"),
        ("canary: {}\n", "exactly one of them"),
        ("canary: {stations: ['s1']}\n", "must be written LINE/STATION"),
        ("canary: {fraction: 0.2}\nsoak: {unit: 5}\n", "soak.unit: unknown key"),
        ("canary: {fraction: 1.5}\n", "canary.fraction: Input should be less than 1"),
    ],
)
def test_a_bad_plan_is_one_line_naming_the_key(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="rollout plan error in") as err:
        load_plan(path)
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_flags_override_the_plan_file(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text("canary: {fraction: 0.1}\nsoak: {units: 80, minutes: 5}\n")
    plan = load_plan(path, {"soak": {"units": 20}})
    assert (plan.canary.fraction, plan.soak.units, plan.soak.minutes) == (0.1, 20, 5)


def _followers(count: int, line: str = "line1") -> list[StationFollow]:
    return [StationFollow(line, f"s{i:02d}", "signal") for i in range(1, count + 1)]


def test_a_fraction_of_the_followers_is_spread_over_them() -> None:
    canaries, rest = pick_canaries(_followers(20), _plan(fraction=0.15))
    assert [c.station for c in canaries] == ["s01", "s07", "s14"]
    assert len(rest) == 17 and not {c.station for c in canaries} & {r.station for r in rest}


def test_named_canaries_must_follow_the_model() -> None:
    canaries, rest = pick_canaries(_followers(3), _plan(stations=["line1/s02"]))
    assert [c.station for c in canaries] == ["s02"] and len(rest) == 2
    with pytest.raises(InputError, match="canary line2/s01 does not follow the model"):
        pick_canaries(_followers(3), _plan(stations=["line2/s01"]))
    with pytest.raises(InputError, match="no station follows this model"):
        pick_canaries([], _plan(fraction=0.5))


def _tally(units: int, fail: int = 0, no_decision: int = 0, deadline: int = 0, error: int = 0) -> Tally:
    return Tally(units, fail, no_decision, deadline, error)


def test_the_guard_rails_halt_on_the_canaries_signals_and_pass_only_a_full_soak() -> None:
    plan = CanaryPlan.model_validate(
        {"canary": {"fraction": 0.1}, "soak": {"units": 20}, "guards": {"min_reference_units": 30}}
    )
    reference = _tally(100, fail=10)
    same = {"a": _tally(20, fail=2), "b": _tally(20, fail=3)}
    assert judge(plan, same, reference).passed
    assert not judge(plan, {"a": _tally(20, fail=2), "b": _tally(19)}, reference).passed  # b not soaked
    assert not judge(plan, same, _tally(29, fail=3)).passed  # too little reference to compare with
    halted = judge(plan, {"a": _tally(20, fail=20), "b": _tally(0)}, reference)  # one canary's worth
    assert not halted.passed and "FAIL rate 100.0% vs 10.0%" in halted.halt
    assert "NO_DECISION rate" in judge(plan, {"a": _tally(20, no_decision=6)}, reference).halt
    assert "deadline misses" in judge(plan, {"a": _tally(20, no_decision=1, deadline=1)}, reference).halt
    assert "1 model errors" in judge(plan, {"a": _tally(1)}, reference, alerts=1).halt  # at once
    assert "escapes confirmed" in judge(plan, {"a": _tally(1)}, reference, escapes=1).halt
    timed = plan.model_copy(update={"soak": plan.soak.model_copy(update={"minutes": 1.0})})
    assert not judge(timed, same, reference, soaked_s=59).passed
    assert judge(timed, same, reference, soaked_s=60).passed


def _verdict(seq: int, station: str, version: str, kind: VerdictKind, reason: Reason) -> Verdict:
    now = utc_now()
    return Verdict(
        seq=seq,
        unit_id=f"{station}-u{seq}",
        line="line1",
        station=station,
        verdict=kind,
        reason=reason,
        model=ModelRef(name="signal", version=version, sha256=SHA),
        thresholds="t",
        captured_at=now - timedelta(milliseconds=5),
        decided_at=now,
        latency_ms=5.0,
    )


class SimStation:
    """A station peer: runs what the registry sends to its ``…/model`` topic, reports and judges.

    Every 10th unit FAILs; a version in ``bad`` FAILs every unit.
    """

    def __init__(self, broker: Broker, station: str, version: str, bad: set[str]) -> None:
        self.station, self.version, self.bad = station, version, bad
        self.seen = [version]
        self.seq = 0
        self._stop = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"sim-{uuid.uuid4().hex[:6]}")
        self.client.on_message = self._on_model
        self.client.connect(broker.host, broker.port)
        self.client.subscribe(f"lineguard/line1/{station}/model", qos=1)
        self.client.loop_start()
        self._status()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _status(self) -> None:
        health = {"model": {"name": "signal", "version": self.version, "sha256": SHA}}
        status = StationStatus.online("line1", self.station, health)
        self.client.publish(f"lineguard/line1/{self.station}/status", status.to_json(), qos=1, retain=True)

    def _on_model(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        desired = DesiredModel.model_validate_json(msg.payload)
        if desired.version != self.version:
            self.version = desired.version
            self.seen.append(desired.version)
            self._status()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.seq += 1
            fail = self.version in self.bad or self.seq % 10 == 0
            kind, reason = (VerdictKind.FAIL, Reason.DEFECT) if fail else (VerdictKind.PASS, Reason.NO_DEFECT)
            verdict = _verdict(self.seq, self.station, self.version, kind, reason)
            self.client.publish(f"lineguard/line1/{self.station}/verdict", verdict.to_json(), qos=1)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def fleet_cli(
    models: dict[str, Path], broker: Broker, tmp_path: Path
) -> Iterator[tuple[list[str], dict[str, SimStation], Registry]]:
    """A registry with signal 1.0.0 in production, five simulated followers running it."""
    from lineguard.cli import main

    config = tmp_path / "lineguard.yaml"
    config.write_text(
        f"registry:\n  root: {tmp_path / 'reg'}\nmqtt:\n  host: {broker.host}\n  port: {broker.port}\n"
    )
    base = ["registry", "--config", str(config)]
    for key in ("weak", "good", "good3"):
        assert main([*base, "add", str(models[key])]) == 0
    names = [f"s{i}" for i in range(1, 6)]
    for name in names:
        assert main([*base, "follow", f"line1/{name}", "signal"]) == 0
    assert main([*base, "promote", "signal:1.0.0", "--to", "production"]) == 0
    sims = {name: SimStation(broker, name, "1.0.0", bad={"3.0.0"}) for name in names}
    try:
        yield base, sims, Registry(tmp_path / "reg")
    finally:
        for sim in sims.values():
            sim.stop()


def test_cli_rollout_takes_a_good_version_everywhere_and_halts_a_bad_one_at_the_canaries(
    fleet_cli: tuple[list[str], dict[str, SimStation], Registry],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from lineguard.cli import main

    base, sims, reg = fleet_cli
    good = [*base, "rollout", "start", "signal", "2.0.0", "--canary", "line1/s2", "--soak-units", "20"]
    assert main([*good, "--force", "--reason", "good one"]) == 0
    out = capsys.readouterr().out
    assert "wave 1: signal:2.0.0 published to 1 canaries" in out and "done: 5/5 followers run 2.0.0" in out
    assert all(sim.version == "2.0.0" for sim in sims.values())

    plan = tmp_path / "plan.yaml"
    plan.write_text("canary:\n  stations: [line1/s1, line1/s4]\nsoak:\n  units: 20\n")
    bad = [
        *base,
        "rollout",
        "start",
        "signal",
        "3.0.0",
        "--plan",
        str(plan),
        "--force",
        "--reason",
        "bad one",
    ]
    assert main(bad) == 1
    out = capsys.readouterr().out
    assert re.search(r"HALT: FAIL rate 100\.0% vs \d{1,2}\.\d% under the previous version", out)
    assert reg.production("signal").version == "2.0.0"  # type: ignore[union-attr]
    wait_until(lambda: sims["s1"].version == sims["s4"].version == "2.0.0", 10, "the canaries back on 2.0.0")
    assert {n for n, sim in sims.items() if "3.0.0" in sim.seen} == {"s1", "s4"}
    steps = [(e.action, e.version) for e in reg.history("signal")][-7:]
    assert steps == [
        ("promote", "3.0.0"),
        ("canary_start", "3.0.0"),
        ("rollout", "3.0.0"),  # wave 1
        ("canary_halted", "3.0.0"),
        ("rollback", "2.0.0"),
        ("rollout", "2.0.0"),  # the canaries get 2.0.0 back
        ("canary_done", "2.0.0"),
    ]

    assert main([*base, "rollout", "status", "signal", "--wait-s", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "signal: production 2.0.0" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("line1/")}
    assert rows["line1/s1"][1:5] == ["canary", "registry", "online", "signal:2.0.0"]
    assert rows["line1/s3"][1] == "-"
    assert "last step:" in out and "canary_done 2.0.0" in out


def test_an_offline_canary_is_refused_before_anything_moves(
    fleet_cli: tuple[list[str], dict[str, SimStation], Registry], capsys: pytest.CaptureFixture[str]
) -> None:
    from lineguard.cli import main

    base, sims, reg = fleet_cli
    assert main([*base, "follow", "line1/s9", "signal"]) == 0  # follows, but no station ever reported
    events = len(reg.history("signal"))
    start = [*base, "rollout", "start", "signal", "2.0.0", "--canary", "line1/s9", "--force", "--reason", "x"]
    assert main(start) == 2
    assert "canary line1/s9 is not online" in capsys.readouterr().err
    assert reg.production("signal").version == "1.0.0"  # type: ignore[union-attr]
    assert len(reg.history("signal")) == events and all(sim.seen == ["1.0.0"] for sim in sims.values())


def test_a_rollout_needs_a_previous_production_version(
    models: dict[str, Path], broker: Broker, tmp_path: Path
) -> None:
    from lineguard.registry.canary import CanaryRollout

    reg = Registry(tmp_path / "reg")
    reg.add(models["weak"])
    reg.follow("line1", "s1", "signal")
    run = CanaryRollout(
        reg, "signal", "1.0.0", _plan(fraction=0.5), MqttConfig(host=broker.host, port=broker.port)
    )
    with pytest.raises(InputError, match="no production version yet, so a canary has nothing to return to"):
        run.start()


def test_the_watch_counts_by_version_and_escapes_only_on_units_the_version_passed(broker: Broker) -> None:
    watch = FleetWatch(MqttConfig(host=broker.host, port=broker.port), "signal", ["line1/s1"]).start()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:6]}")
    client.connect(broker.host, broker.port)
    client.loop_start()
    topic = "lineguard/line1/s1/"
    try:
        sent = [
            _verdict(1, "s1", "2.0.0", VerdictKind.PASS, Reason.NO_DEFECT),
            _verdict(2, "s1", "2.0.0", VerdictKind.FAIL, Reason.DEFECT),
            _verdict(3, "s1", "1.0.0", VerdictKind.PASS, Reason.NO_DEFECT),
            _verdict(4, "s1", "2.0.0", VerdictKind.NO_DECISION, Reason.DEADLINE),
        ]
        for v in sent:
            client.publish(topic + "verdict", v.to_json(), qos=1).wait_for_publish(5)
        client.publish(topic + "verdict", b'{"not": "a verdict"}', qos=1).wait_for_publish(5)
        for unit in ("s1-u1", "s1-u2", "s1-u3", "unknown"):
            feedback = Feedback(unit_id=unit, outcome="escape").to_json()
            client.publish(topic + "feedback", feedback, qos=1).wait_for_publish(5)
        for kind, level in (("model_refused", "warning"), ("camera_down", "alarm"), ("model_rollback", "ok")):
            alert = build_alert(kind, {"level": level, "message": kind}, line="line1", station="s1")
            client.publish(topic + "alert", alert.to_json(), qos=1).wait_for_publish(5)
        wait_until(lambda: watch.traffic()["messages"].get("feedback", 0) == 4, 10, "the feedback")
        wait_until(lambda: watch.traffic()["messages"].get("alert", 0) == 3, 10, "the alerts")
        assert [a.kind for a in watch.model_alerts(["line1/s1"], since=0)] == ["model_refused"]
        assert watch.tally(["line1/s1"], "2.0.0") == Tally(3, 1, 1, 1, 0)
        assert watch.tally(["line1/s1"], "1.0.0").units == 1
        assert (watch.escapes(["line1/s1"], "2.0.0"), watch.escapes(["line1/s1"], "1.0.0")) == (1, 1)
        assert watch.traffic()["dropped"] == {"verdict": 1}
    finally:
        client.loop_stop()
        client.disconnect()
        watch.stop()


def test_the_example_plan_loads() -> None:
    plan = load_plan(Path(__file__).parents[2] / "configs" / "rollout.example.yaml")
    assert plan.canary.stations == ["line1/press-2", "line3/press-1"] and plan.soak.units == 200


def test_a_soak_stopped_by_the_operator_halts_and_rolls_back(
    fleet_cli: tuple[list[str], dict[str, SimStation], Registry], broker: Broker
) -> None:
    from lineguard.registry import Stage
    from lineguard.registry.canary import CanaryRollout

    _, sims, reg = fleet_cli

    def say(line: str) -> None:
        if line.startswith("wave 1"):
            raise KeyboardInterrupt  # Ctrl-C right after the canaries were sent the new version

    plan = _plan(stations=["line1/s3"])
    mqtt_cfg = MqttConfig(host=broker.host, port=broker.port)
    run = CanaryRollout(reg, "signal", "2.0.0", plan, mqtt_cfg, say=say).start()
    try:
        result = run.run(lambda: reg.promote("signal", "2.0.0", Stage.PRODUCTION, force=True, why="x"))
    finally:
        run.close()
    assert result.halted and "stopped before its soak ended: interrupted" in result.reason
    assert reg.production("signal").version == "1.0.0"  # type: ignore[union-attr]
    wait_until(lambda: sims["s3"].version == "1.0.0", 10, "the canary back on 1.0.0")
    assert {n for n, sim in sims.items() if "2.0.0" in sim.seen} <= {"s3"}
