"""The frame store on real files: what it keeps, what it lets go, and what survives a restart."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from lineguard.config import FrameStoreConfig
from lineguard.edge.frame_store import FrameStore
from lineguard.errors import InputError
from lineguard.messages import Defect, ImageRef, Reason, Verdict, VerdictKind
from lineguard.synthetic import render_unit

REASONS = {
    VerdictKind.PASS: Reason.NO_DEFECT,
    VerdictKind.FAIL: Reason.DEFECT,
    VerdictKind.NO_DECISION: Reason.UNCERTAIN,
}
SCRATCH = Defect.model_validate(
    {"class": "scratch", "class_id": 0, "confidence": 0.9, "box": (0.2, 0.2, 0.6, 0.5)}
)


def verdict(seq: int, kind: VerdictKind, *, kept: bool, age_s: float = 0.0) -> Verdict:
    at = datetime.now(UTC) - timedelta(seconds=age_s)
    return Verdict(
        seq=seq,
        unit_id=f"s1-{seq}",
        line="l1",
        station="s1",
        verdict=kind,
        reason=REASONS[kind],
        defects=(SCRATCH,) if kind is VerdictKind.FAIL else (),
        model=None,
        thresholds="t",
        captured_at=at,
        decided_at=at,
        latency_ms=5.0,
        image=ImageRef.for_seq(seq) if kept else None,
    )


def offer(store: FrameStore, seq: int, kind: VerdictKind, *, age_s: float = 0.0) -> bool:
    """What the daemon does per unit: plan before the verdict exists, then record it."""
    keep = store.plan(kind)
    store.record(
        verdict(seq, kind, kept=keep, age_s=age_s), render_unit(1, seq, imgsz=160).image if keep else None
    )
    return keep


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[list[FrameStore]]:
    opened: list[FrameStore] = []
    yield opened
    for store in opened:
        store.close()


def open_store(stores: list[FrameStore], folder: Path, **cfg: object) -> FrameStore:
    store = FrameStore(FrameStoreConfig.model_validate(cfg), folder)
    stores.append(store)
    return store


def decode(jpeg: bytes | None) -> npt.NDArray[np.uint8]:
    assert jpeg is not None
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return np.asarray(image, np.uint8)


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != ".lock")


def test_every_fail_and_no_decision_is_kept_and_a_share_of_pass(
    tmp_path: Path, stores: list[FrameStore]
) -> None:
    store = open_store(stores, tmp_path / "frames", pass_share=0.1)
    kinds = [VerdictKind.PASS] * 8 + [VerdictKind.FAIL, VerdictKind.NO_DECISION]
    planned: dict[int, bool] = {}
    for seq in range(1, 101):  # at a camera's pace: the writer is never behind (that case is counted)
        planned[seq] = offer(store, seq, kinds[(seq - 1) % 10])
        assert store.flush()
    kept = {v["seq"]: v["verdict"] for v in store.recent(500) if "image" in v}
    assert sorted(kept) == sorted(seq for seq, keep in planned.items() if keep)
    counts = {kind: sum(1 for k in kept.values() if k == kind) for kind in ("PASS", "FAIL", "NO_DECISION")}
    assert counts == {"PASS": 8, "FAIL": 10, "NO_DECISION": 10}  # 80 PASS x 0.1, all of the rest
    assert len(store.recent(500)) == 100  # every verdict is listed; only kept ones name an image
    jpeg = store.image(9)
    assert jpeg is not None and jpeg.startswith(b"\xff\xd8")
    assert decode(jpeg).shape == (160, 160, 3)
    assert store.image(1) is None  # a PASS that was not kept


def test_annotated_image_draws_the_verdict_on_the_frame(tmp_path: Path, stores: list[FrameStore]) -> None:
    store = open_store(stores, tmp_path / "frames", jpeg_quality=95)
    offer(store, 3, VerdictKind.FAIL)
    assert store.flush()
    plain = decode(store.image(3))
    drawn = decode(store.image(3, annotated=True))
    assert plain.shape == drawn.shape

    def red(image: npt.NDArray[np.uint8]) -> npt.NDArray[np.bool_]:
        return np.asarray((image[..., 2].astype(int) - image[..., 1]) > 60)

    x1, y1 = round(0.2 * 159), round(0.2 * 159)
    assert red(drawn)[y1, x1 + 10 : x1 + 40].mean() > 0.8  # the defect's box edge, in FAIL red
    assert red(drawn)[:4].mean() > 0.5  # the verdict band on top
    assert not red(plain).any()  # the plain frame is as the camera saw it


def test_store_never_holds_more_than_max_bytes_during_a_fast_run(
    tmp_path: Path, stores: list[FrameStore]
) -> None:
    folder = tmp_path / "frames"
    limit = 64 * 1024  # about eight 160 px frames
    store = open_store(stores, folder, max_bytes=limit, pass_share=1.0)
    largest, peak, done = 0, 0, threading.Event()

    def watch() -> None:
        nonlocal peak
        while not done.is_set():
            total = 0
            for entry in os.scandir(folder):
                with contextlib.suppress(FileNotFoundError):  # evicted between listing and stat
                    total += entry.stat().st_size
            peak = max(peak, total)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for seq in range(1, 501):
            offer(store, seq, VerdictKind.FAIL)
        assert store.flush(60)
    finally:
        done.set()
        watcher.join()
    for name in files(folder):
        largest = max(largest, (folder / name).stat().st_size)
    assert 0 < store.stored_bytes <= limit
    assert peak <= limit + largest, (peak, limit)
    kept = sorted(int(name[:12]) for name in files(folder) if name.endswith(".jpg"))
    assert kept and kept[-1] == max(v["seq"] for v in store.recent(500) if "image" in v)
    assert kept == sorted(v["seq"] for v in store.recent(500) if "image" in v)  # the newest survive


def test_frames_past_max_age_are_deleted(tmp_path: Path, stores: list[FrameStore]) -> None:
    folder = tmp_path / "frames"
    store = open_store(stores, folder, max_age_s=3600)
    for seq in (1, 2):
        offer(store, seq, VerdictKind.FAIL, age_s=7200)  # decided two hours ago
    offer(store, 3, VerdictKind.FAIL)
    assert store.flush()
    offer(store, 4, VerdictKind.FAIL)  # each write first lets old frames go
    assert store.flush()
    assert files(folder) == ["000000000003.jpg", "000000000003.json", "000000000004.jpg", "000000000004.json"]
    assert store.image(1) is None and store.get(4) is not None


def test_restart_keeps_what_the_store_held(tmp_path: Path, stores: list[FrameStore]) -> None:
    folder = tmp_path / "frames"
    store = open_store(stores, folder, pass_share=0.0)
    for seq in range(1, 6):
        offer(store, seq, VerdictKind.NO_DECISION if seq % 2 else VerdictKind.FAIL)
    assert store.flush()
    before = {seq: store.image(seq) for seq in range(1, 6)}
    held = store.stored_bytes
    store.close()
    stores.remove(store)

    again = open_store(stores, folder)
    assert again.stored_bytes == held
    assert {seq: again.image(seq) for seq in range(1, 6)} == before
    listed = again.recent(10, verdict="FAIL")
    assert [v["seq"] for v in listed] == [4, 2]
    assert listed[0]["image"] == {"ref": "4", "url": "/v1/verdicts/4/image"}
    assert again.seq_for_unit("s1-5") == 5


def test_a_second_process_on_the_same_folder_is_refused(tmp_path: Path, stores: list[FrameStore]) -> None:
    open_store(stores, tmp_path / "frames")
    with pytest.raises(InputError, match="in use by another process"):
        open_store(stores, tmp_path / "frames")


def test_hostile_files_are_skipped_at_start_with_a_log_line(
    tmp_path: Path, stores: list[FrameStore], caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "frames"
    store = open_store(stores, folder)
    for seq in (1, 2, 3, 4):
        offer(store, seq, VerdictKind.FAIL)
    assert store.flush()
    store.close()
    stores.remove(store)
    secret = tmp_path / "secret.txt"
    secret.write_text("do not serve me")
    (folder / "000000000002.json").write_text('{"schema": "lineguard.frame/1", "verdict": {"seq": "x"}}')
    (folder / "000000000003.json").unlink()  # a JPEG without its sidecar
    (folder / "000000000004.jpg").write_bytes(b"GIF89a not a jpeg")
    (folder / "000000000009.jpg").symlink_to(secret)
    (folder / "000000000009.json").symlink_to(folder / "000000000001.json")
    (folder / "000000000010.jpg.tmp").write_bytes(b"half")
    (folder / "notes.txt").write_text("an operator's file")

    with caplog.at_level(logging.WARNING, logger="lineguard.edge.frame_store"):
        again = open_store(stores, folder)
    assert [v["seq"] for v in again.recent(10)] == [1]
    assert again.image(9) is None
    assert files(folder) == [
        "000000000001.jpg",
        "000000000001.json",
        "000000000009.jpg",
        "000000000009.json",
        "notes.txt",
    ]  # broken pairs and the half-written file deleted; links and strangers left alone
    skipped = [
        r.getMessage() for r in caplog.records if r.getMessage().startswith("frame_store_file_skipped")
    ]
    assert [m.split()[1] for m in skipped] == ["seq=2", "seq=3", "seq=4"]
    assert all("do not serve" not in r.getMessage() for r in caplog.records)
    assert any(
        "frame_store_unknown_files" in r.getMessage() and "count=3" in r.getMessage() for r in caplog.records
    )
