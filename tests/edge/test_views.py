"""Several views, one verdict: the combination rules, the config, and a station on two fake GigE cameras.

The combination is a pure function over each view's verdict, so its rules are checked without a
camera. The station tests run two of Aravis' fake GigE Vision cameras on 127.0.0.2 and 127.0.0.3
(added to ``lo`` for the test), so they never collide with ``test_gige``'s camera on 127.0.0.1.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from support.aravis import FakeCamera, loopback_address
from support.mqtt import wait_until
from support.signal_model import build_signal_onnx
from support.stations import running_station

from lineguard.cli import main
from lineguard.config import load_config
from lineguard.edge.inspector import ModelSlot
from lineguard.edge.sources import Frame
from lineguard.edge.views import ViewFrame, judge_views
from lineguard.errors import ConfigError
from lineguard.inference import Decision, Detections, combine_views
from lineguard.labeling import ReviewItem
from lineguard.labeling.label_studio import review_task
from lineguard.messages import Defect, Reason, Verdict, VerdictKind, ViewVerdict

T0 = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
SCRATCH = Defect.model_validate(
    {"class": "scratch", "class_id": 0, "confidence": 0.9, "box": (0, 0, 0.5, 0.5)}
)
PIT = Defect.model_validate({"class": "pit", "class_id": 1, "confidence": 0.7, "box": (0.5, 0.5, 1, 1)})


def view(name: str, kind: VerdictKind, reason: Reason, *defects: Defect) -> ViewVerdict:
    got_frame = reason is not Reason.CAMERA
    return ViewVerdict(
        name=name,
        verdict=kind,
        reason=reason,
        defects=defects,
        camera=f"gige:{name}",
        frame=7 if got_frame else None,
        captured_at=T0 if got_frame else None,
    )


PASS_TOP = view("top", VerdictKind.PASS, Reason.NO_DEFECT)
PASS_SIDE = view("side", VerdictKind.PASS, Reason.NO_DEFECT)


# -- the combination (pure) ------------------------------------------------------------------------
def test_all_views_pass_is_a_pass_naming_no_view() -> None:
    decision = combine_views([PASS_TOP, PASS_SIDE])
    assert (decision.verdict, decision.reason, decision.view) == (VerdictKind.PASS, Reason.NO_DEFECT, None)
    assert decision.views == (PASS_TOP, PASS_SIDE)


def test_any_failing_view_fails_the_unit_even_when_another_view_is_missing() -> None:
    side_fail = view("side", VerdictKind.FAIL, Reason.DEFECT, SCRATCH)
    missing = view("back", VerdictKind.NO_DECISION, Reason.CAMERA)
    decision = combine_views([PASS_TOP, missing, side_fail])
    assert (decision.verdict, decision.reason, decision.view) == (VerdictKind.FAIL, Reason.DEFECT, "side")


def test_a_missing_view_gives_no_decision_naming_it() -> None:
    missing = view("side", VerdictKind.NO_DECISION, Reason.CAMERA)
    decision = combine_views([PASS_TOP, missing])
    assert (decision.verdict, decision.reason, decision.view) == (
        VerdictKind.NO_DECISION,
        Reason.CAMERA,
        "side",
    )
    dark = view("top", VerdictKind.NO_DECISION, Reason.IMAGE_QUALITY)
    assert combine_views([dark, PASS_SIDE]).reason is Reason.IMAGE_QUALITY
    # Top ran out of time only because the station waited for side: the missing view is the cause.
    waited = view("top", VerdictKind.NO_DECISION, Reason.DEADLINE)
    decision = combine_views([waited, missing])
    assert (decision.reason, decision.view) == (Reason.CAMERA, "side")


def test_a_late_unit_is_no_decision_naming_the_slowest_view_unless_a_view_failed() -> None:
    late = combine_views([PASS_TOP, PASS_SIDE], late="side")
    assert (late.verdict, late.reason, late.view) == (VerdictKind.NO_DECISION, Reason.DEADLINE, "side")
    # Top ran over its own deadline while the station waited for side's frame: side is the slow one.
    waited = view("top", VerdictKind.NO_DECISION, Reason.DEADLINE)
    late = combine_views([waited, PASS_SIDE], late="side")
    assert (late.reason, late.view) == (Reason.DEADLINE, "side")
    dark = view("side", VerdictKind.NO_DECISION, Reason.IMAGE_QUALITY)
    assert combine_views([waited, dark], late="side").reason is Reason.IMAGE_QUALITY
    failed = combine_views([view("top", VerdictKind.FAIL, Reason.DEFECT, PIT), PASS_SIDE], late="side")
    assert failed.verdict is VerdictKind.FAIL and failed.view == "top"


def test_defects_are_kept_per_view_and_listed_together() -> None:
    top = view("top", VerdictKind.FAIL, Reason.DEFECT, SCRATCH)
    side = view("side", VerdictKind.FAIL, Reason.DEFECT, PIT)
    decision = combine_views([top, side])
    assert decision.defects == (SCRATCH, PIT)
    assert [v.defects for v in decision.views] == [(SCRATCH,), (PIT,)]
    assert combine_views([]).verdict is VerdictKind.NO_DECISION  # nothing seen is never a PASS


COMMON: dict[str, Any] = {
    "seq": 1,
    "unit_id": "U1",
    "line": "l",
    "station": "s",
    "model": None,
    "thresholds": "none",
    "captured_at": T0,
    "decided_at": T0,
    "latency_ms": 0.0,
}


def test_single_camera_verdicts_leave_the_view_fields_out_of_the_json() -> None:
    single = Verdict(verdict=VerdictKind.PASS, reason=Reason.NO_DEFECT, **COMMON)
    assert "views" not in json.loads(single.to_json()) and "view" not in json.loads(single.to_json())
    missing = view("side", VerdictKind.NO_DECISION, Reason.CAMERA)
    several = Verdict(
        verdict=VerdictKind.NO_DECISION,
        reason=Reason.CAMERA,
        view="side",
        views=(PASS_TOP, missing),
        **COMMON,
    )
    payload = json.loads(several.to_json())
    assert payload["schema"] == "lineguard.verdict/1" and payload["view"] == "side"
    assert payload["views"][1] == {
        "name": "side",
        "verdict": "NO_DECISION",
        "reason": "camera",
        "defects": [],
        "camera": "gige:side",
        "frame": None,
        "captured_at": None,
    }
    assert Verdict.from_json(several.to_json()) == several


def test_the_frame_shown_for_a_unit_is_a_view_with_a_frame_and_carries_only_its_boxes() -> None:
    top = view("top", VerdictKind.FAIL, Reason.DEFECT, SCRATCH)
    side = view("side", VerdictKind.FAIL, Reason.DEFECT, PIT)
    failed = Verdict(
        verdict=VerdictKind.FAIL,
        reason=Reason.DEFECT,
        defects=(SCRATCH, PIT),
        view="side",
        views=(top, side),
        **COMMON,
    )
    assert (failed.shown_view, failed.shown_defects) == ("side", (PIT,))
    passed = Verdict(verdict=VerdictKind.PASS, reason=Reason.NO_DEFECT, views=(PASS_TOP, PASS_SIDE), **COMMON)
    assert (passed.shown_view, passed.shown_defects) == ("top", ())
    missing = view("top", VerdictKind.NO_DECISION, Reason.CAMERA)
    no_frame = Verdict(
        verdict=VerdictKind.NO_DECISION,
        reason=Reason.CAMERA,
        view="top",
        views=(missing, PASS_SIDE),
        **COMMON,
    )
    assert no_frame.shown_view == "side"  # top has no frame: the verdict shows side's
    single = Verdict(verdict=VerdictKind.FAIL, reason=Reason.DEFECT, defects=(PIT,), **COMMON)
    assert (single.shown_view, single.shown_defects) == (None, (PIT,))

    item = ReviewItem(
        review_id="r1", unit_id="U1", line="l", station="s", captured_at=T0, reason="no_decision", view="side"
    )
    assert review_task(item, "/data/r1.jpg")["data"]["view"] == "side"  # QA sees which camera
    assert "view" not in review_task(item.model_copy(update={"view": ""}), "/data/r1.jpg")["data"]


def test_the_verdict_shows_the_deciding_view_stamped_with_the_first_capture() -> None:
    now = time.monotonic()
    top = Frame(np.zeros((4, 4, 3), np.uint8), T0, now - 0.010, 3)
    side = Frame(np.full((4, 4, 3), 9, np.uint8), T0.replace(second=1), now - 0.005, 5)
    outcomes = {
        "top": Decision(VerdictKind.PASS, Reason.NO_DEFECT),
        "side": Decision(VerdictKind.FAIL, Reason.DEFECT, (PIT,)),
    }
    slot: ModelSlot | None = None

    def decide(v: ViewFrame, frame: Frame) -> tuple[Decision, ModelSlot | None, Detections]:
        return outcomes[v.name], slot, Detections.empty()

    unit = judge_views([ViewFrame("top", "gige:a", top), ViewFrame("side", "gige:b", side)], decide, 1000.0)
    assert unit.decision.verdict is VerdictKind.FAIL and unit.decision.view == "side"
    assert unit.frame.image is side.image and unit.storable  # the failing view's frame
    assert (unit.frame.captured_at, unit.frame.captured_mono) == (T0, top.captured_mono)  # first capture
    assert [(v.frame, v.captured_at) for v in unit.decision.views] == [(3, T0), (5, side.captured_at)]

    late = judge_views([ViewFrame("top", "gige:a", top), ViewFrame("side", "gige:b", side)], decide, 1.0)
    assert late.decision.verdict is VerdictKind.FAIL  # a defect seen stays a FAIL when late
    outcomes["side"] = Decision(VerdictKind.PASS, Reason.NO_DEFECT)
    late = judge_views([ViewFrame("top", "gige:a", top), ViewFrame("side", "gige:b", side)], decide, 1.0)
    assert (late.decision.reason, late.decision.view) == (Reason.DEADLINE, "side")  # side came last

    nothing = judge_views(
        [ViewFrame("top", "gige:a", None, "down"), ViewFrame("side", "gige:b", None, "down")], decide, 1000.0
    )
    assert (nothing.decision.reason, nothing.decision.view, nothing.storable) == (Reason.CAMERA, "top", False)


# -- configuration ---------------------------------------------------------------------------------
def two_views(**changes: Any) -> dict[str, Any]:
    views = [
        {"name": "top", "camera": {"kind": "gige", "uri": "127.0.0.2"}},
        {"name": "side", "camera": {"kind": "gige", "uri": "127.0.0.3"}},
    ]
    return {"mode": "triggered", "views": views} | changes


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (two_views(mode="continuous"), "views pair one frame from each camera per trigger, but mode is"),
        (two_views(views=[{"name": "top", "camera": {}}]), "views lists one view; use camera:"),
        (two_views(views=[{"name": "top", "camera": {}}] * 2), "views names ['top'] more than once"),
        (two_views(views=[{"name": f"v{i}", "camera": {}} for i in range(5)]), "at most 4 items"),
        (two_views(views=[{"name": "top/../x", "camera": {}}] * 2), "views.0.name: String should match"),
        (two_views(views=[{"name": "top", "camera": {}, "cam": {}}] * 2), "views.0.cam: unknown key"),
        (two_views(camera={"kind": "gige"}), "camera and views are both set"),
    ],
)
def test_bad_views_are_one_line_config_errors(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, environ={}, overrides=overrides)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_single_camera_config_is_unchanged_and_views_load_typed() -> None:
    single = load_config(None, environ={}, overrides={"camera": {"kind": "synthetic"}})
    assert single.views == [] and single.camera.kind == "synthetic"
    cfg = load_config(None, environ={}, overrides=two_views())
    assert [(v.name, v.camera.kind, v.camera.uri) for v in cfg.views] == [
        ("top", "gige", "127.0.0.2"),
        ("side", "gige", "127.0.0.3"),
    ]


# -- a station on two fake GigE cameras ------------------------------------------------------------
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("signal_model")
    build_signal_onnx(out)
    return out


@pytest.fixture(scope="module")
def cameras() -> Iterator[tuple[FakeCamera, FakeCamera]]:
    with (
        loopback_address("127.0.0.2"),
        loopback_address("127.0.0.3"),
        FakeCamera("127.0.0.2", "LGTOP") as top,
        FakeCamera("127.0.0.3", "LGSIDE") as side,
    ):
        yield top, side


@pytest.fixture
def plugged(cameras: tuple[FakeCamera, FakeCamera]) -> tuple[FakeCamera, FakeCamera]:
    """Both cameras running (a test that pulled one may have failed before plugging it back in)."""
    for camera in cameras:
        if not camera.running:
            camera.start()
    return cameras


def views_of(top: FakeCamera, side: FakeCamera) -> list[dict[str, Any]]:
    def camera(fake: FakeCamera) -> dict[str, Any]:
        return {"kind": "gige", "uri": fake.address, "watchdog_s": 1.0, "reconnect_max_s": 0.5} | {
            "gige": {"trigger": "software"}
        }

    return [{"name": "top", "camera": camera(top)}, {"name": "side", "camera": camera(side)}]


def test_check_reads_one_frame_from_each_view(
    tmp_path: Path, plugged: tuple[FakeCamera, FakeCamera], capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "station.yaml"
    station = {
        "mode": "triggered",
        "station": {"station": "s1", "data_dir": str(tmp_path / "var")},
        "views": views_of(*plugged),
        "mqtt": {"enabled": False},
    }
    config.write_text(yaml.safe_dump(station))
    assert main(["edge", "check", "--config", str(config), "--camera"]) == 0
    out = capsys.readouterr().out
    assert "views top, side" in out
    assert "OK    view top   gige:127.0.0.2: 512x512 frame" in out
    assert "OK    view side  gige:127.0.0.3: 512x512 frame" in out


def _trigger(base: str, unit_id: str) -> Verdict:
    response = httpx.post(f"{base}/v1/inspect", params={"unit_id": unit_id}, timeout=15)
    assert response.status_code == 200, response.text
    return Verdict.from_json(response.content)


def test_two_cameras_give_one_verdict_per_trigger_with_both_views(
    tmp_path: Path, model_dir: Path, plugged: tuple[FakeCamera, FakeCamera]
) -> None:
    top, side = plugged
    with running_station(
        tmp_path,
        model_dir,
        mode="triggered",
        first_unit=False,
        views=views_of(top, side),
        frame_store={"pass_share": 1.0},  # every unit's frame is kept
    ) as (daemon, base):
        wait_until(lambda: daemon.status()["camera"]["up"], 10, "both cameras connected")
        status = daemon.status()["camera"]
        verdicts = [_trigger(base, f"PLC-{i}") for i in range(5)]
        frames = daemon.metrics.registry.get_sample_value("lineguard_frames_total")
        image = httpx.get(
            f"{base}/v1/verdicts/{verdicts[0].seq}/image", params={"annotated": "true"}, timeout=5
        )
    assert status["source"] == "top=gige:127.0.0.2, side=gige:127.0.0.3"
    assert [v.unit_id for v in verdicts] == [f"PLC-{i}" for i in range(5)]
    assert frames == 10  # one trigger, one frame from each camera
    stored = [Verdict.from_json(line) for line in (tmp_path / "verdicts.jsonl").read_text().splitlines()]
    assert [v.unit_id for v in stored] == [v.unit_id for v in verdicts]  # exactly one verdict per trigger
    for verdict in verdicts:
        assert verdict.views is not None and [v.name for v in verdict.views] == ["top", "side"]
        assert all(v.reason is not Reason.CAMERA for v in verdict.views)
        assert all(v.frame is not None and v.captured_at is not None for v in verdict.views)
        assert verdict.views[0].camera == "gige:127.0.0.2" and verdict.views[1].camera == "gige:127.0.0.3"
        assert verdict.captured_at == min(v.captured_at for v in verdict.views if v.captured_at is not None)
    assert verdicts[0].image is not None and verdicts[0].shown_view in ("top", "side")
    assert image.status_code == 200 and image.content[:2] == b"\xff\xd8"  # the frame store kept one view


@pytest.mark.slow  # the heartbeat needs about 5 s to call a camera lost
def test_a_pulled_view_gives_no_decision_naming_it_an_alert_and_recovers(
    tmp_path: Path, model_dir: Path, plugged: tuple[FakeCamera, FakeCamera]
) -> None:
    top, side = plugged
    with running_station(
        tmp_path,
        model_dir,
        mode="triggered",
        first_unit=False,
        views=views_of(top, side),
        policy={"min_box_area": 1.0},  # no box counts: top never FAILs, side's absence decides
    ) as (daemon, base):
        alerts: list[tuple[str, dict[str, object]]] = []
        publish = daemon.delivery.publish_alert

        def record(kind: str, detail: dict[str, object]) -> None:
            alerts.append((kind, detail))
            publish(kind, detail)

        daemon.delivery.publish_alert = record  # type: ignore[method-assign]
        wait_until(lambda: daemon.status()["camera"]["up"], 10, "both cameras connected")
        before = _trigger(base, "U-before")
        side.stop()  # the side camera's cable is pulled
        missed = [_trigger(base, f"U-out-{i}") for i in range(2)]
        wait_until(lambda: not daemon.status()["camera"]["up"], 15, "the side camera reported down")
        wait_until(lambda: any(kind == "camera_down" for kind, _ in alerts), 5, "a camera_down alert")
        missed.append(_trigger(base, "U-out-2"))  # known down: answered at once

        side.start()  # plugged back in
        wait_until(lambda: daemon.status()["camera"]["up"], 15, "the side camera back up")
        after = _trigger(base, "U-after")

    assert before.reason is not Reason.CAMERA and before.view != "side"
    for verdict in missed:
        assert (verdict.verdict, verdict.reason, verdict.view) == (
            VerdictKind.NO_DECISION,
            Reason.CAMERA,
            "side",
        )
        assert verdict.views is not None
        top_part, side_part = verdict.views
        assert top_part.reason is not Reason.CAMERA and top_part.frame is not None  # top still judged
        assert (side_part.reason, side_part.frame) == (Reason.CAMERA, None)
    down = [detail for kind, detail in alerts if kind == "camera_down"]
    assert len(down) == 1 and str(down[0]["detail"]).startswith("side: ")
    assert after.reason is not Reason.CAMERA and after.views is not None
    assert all(v.frame is not None for v in after.views)
