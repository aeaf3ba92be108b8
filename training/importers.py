"""Import labeled images from YOLO, Pascal VOC or Label Studio into an immutable dataset version.

A model card names its training data by one hash, so whatever format the labels arrive in, they
become the same thing: a YOLO folder (``images/<split>``, ``labels/<split>``, ``data.yaml``) with a
``manifest.json`` that lists every file's sha256, the classes, the split, the source and the
parent version. Splits come from list files (``train.txt``, ``val.txt``, ``calib.txt``: one image
id a line), from the source, or are made here: first a ``calib`` share chosen by a hash of each
image's id (so an image held out for calibration stays held out in every later version that keeps
it, and never drifts into training), then a seeded train/val split of the rest stratified by each
image's main class. Every input left out is counted by reason in the manifest; ``strict`` turns any
such skip into an error.
"""

from __future__ import annotations

import hashlib
import random
import shutil
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import yaml

from lineguard.datasets import CALIB_SPLIT
from lineguard.errors import DatasetError, InputError
from lineguard.messages import DatasetManifest
from lineguard.training._formats import Sample, check_sample, read_labelstudio, read_voc, read_yolo

__all__ = ["FORMATS", "ImportFormat", "ImportReport", "import_dataset"]

ImportFormat = Literal["yolo", "voc", "labelstudio"]
FORMATS: tuple[str, ...] = ("yolo", "voc", "labelstudio")


@dataclass(frozen=True)
class ImportReport:
    manifest: DatasetManifest
    out: Path
    images: dict[str, int]
    skipped: dict[str, int]

    def summary(self) -> str:
        split = ", ".join(f"{k} {v}" for k, v in sorted(self.images.items()))
        skipped = ", ".join(f"{k} {v}" for k, v in sorted(self.skipped.items())) or "none"
        return (
            f"dataset version {self.manifest.content_hash[:12]} at {self.out}: {split} images; "
            f"classes {', '.join(self.manifest.classes)}; skipped: {skipped}"
        )


def import_dataset(
    fmt: str,
    src: Path,
    out: Path,
    *,
    split_from: list[Path] | None = None,
    val_share: float = 0.2,
    calib_share: float = 0.15,
    seed: int = 0,
    classes: list[str] | None = None,
    image_dirs: list[Path] | None = None,
    parent: str | None = None,
    strict: bool = False,
) -> ImportReport:
    """Read ``src`` in format ``fmt`` and write a new dataset version at ``out``."""
    if fmt not in FORMATS:
        raise InputError(f"unknown import format {fmt!r}; use one of {', '.join(FORMATS)}")
    if not src.exists():
        raise InputError(f"import source not found: {src}")
    if out.exists() and any(out.iterdir()):
        raise DatasetError(f"{out} exists and is not empty; dataset versions are immutable, pick a new --out")
    _check_shares(val_share, calib_share)
    skipped: Counter[str] = Counter()
    if fmt == "labelstudio":
        if not src.is_file():
            raise InputError(f"a Label Studio source is the exported JSON file; got folder {src}")
        samples, found = read_labelstudio(src, skipped, image_dirs or [])
    elif not src.is_dir():
        raise InputError(f"a {fmt} source is a folder; got file {src}")
    elif fmt == "voc":
        samples, found = read_voc(src, skipped)
    else:
        samples, found = read_yolo(src, skipped)
    class_list = list(classes) if classes else found
    if not class_list:
        raise DatasetError(f"no labeled boxes in {src}, so no classes; pass --classes to name them")
    checked = [s for s in (check_sample(s, class_list, skipped) for s in samples) if s is not None]
    if not checked:
        raise DatasetError(f"no usable images in {src} (skipped: {dict(skipped) or 'nothing found'})")
    if split_from:
        _apply_split_lists(checked, split_from, skipped)
        checked = [s for s in checked if s.split is not None]
    elif any(s.split is None for s in checked):
        unsplit = _hold_out_for_calibration(checked, calib_share)
        _stratified_split(unsplit, val_share / (1.0 - calib_share), seed)
    skipped = +skipped  # drop reasons counted zero times
    if strict and skipped:
        raise DatasetError(f"import of {src} would skip inputs {dict(skipped)}; fix them or drop --strict")
    counts = _write(out, checked, class_list)
    manifest = DatasetManifest.scan(
        out,
        name=out.name,
        classes=class_list,
        source=f"{fmt}:{src.resolve()}",
        created_at=datetime.now(UTC),
        parent=parent,
    )
    manifest.counts = counts
    manifest.skipped = dict(sorted(skipped.items()))
    manifest.provenance = {s.stem: s.provenance for s in checked if s.provenance}
    manifest.save(out)
    images = {split: tally["images"] for split, tally in counts.items()}
    return ImportReport(manifest=manifest, out=out, images=images, skipped=manifest.skipped)


def _check_shares(val_share: float, calib_share: float) -> None:
    if not 0.0 < val_share < 1.0:
        raise InputError(f"--val-share must be between 0 and 1; got {val_share}")
    if not 0.0 <= calib_share < 1.0 - val_share:
        raise InputError(
            f"--calib-share must be at least 0 and leave images to train on beside --val-share "
            f"{val_share}; got {calib_share}"
        )


def _apply_split_lists(samples: list[Sample], lists: list[Path], skipped: Counter[str]) -> None:
    """Each list file ``<split>.txt`` names image ids (stems, extension optional) of that split."""
    assigned: dict[str, str] = {}
    for path in lists:
        if not path.is_file():
            raise InputError(f"split list not found: {path}")
        split = path.stem
        for line in path.read_text().splitlines():
            stem = Path(line.strip()).stem if line.strip() else ""
            if not stem:
                continue
            if assigned.setdefault(stem, split) != split:
                raise DatasetError(f"image id {stem!r} is listed in both {assigned[stem]} and {split}")
    by_stem = {s.stem for s in samples}
    skipped["listed_but_not_imported"] += len(set(assigned) - by_stem)
    for sample in samples:
        sample.split = assigned.get(sample.stem)
        if sample.split is None:
            skipped["not_in_split_lists"] += 1
    for key in ("listed_but_not_imported", "not_in_split_lists"):
        if not skipped[key]:
            del skipped[key]


def _hold_out_for_calibration(samples: list[Sample], share: float) -> list[Sample]:
    """Send about ``share`` of the images to ``calib`` by a hash of their id; return the rest.

    The hash, unlike a shuffle, gives each image the same answer whatever else is imported with it.
    """
    rest = []
    for sample in samples:
        digest = int.from_bytes(hashlib.sha256(sample.stem.encode()).digest()[:8], "big")
        if digest / 2**64 < share:
            sample.split = CALIB_SPLIT
        else:
            rest.append(sample)
    return rest


def _stratified_split(samples: list[Sample], val_share: float, seed: int) -> None:
    """Per main class (most boxes; '' for defect-free), a seeded shuffle sends a share to val."""
    strata: dict[str, list[Sample]] = defaultdict(list)
    for sample in sorted(samples, key=lambda s: s.stem):
        names = Counter(b.name for b in sample.boxes)
        main = min(names, key=lambda n: (-names[n], n)) if names else ""
        strata[main].append(sample)
    rng = random.Random(seed)
    for key in sorted(strata):
        group = strata[key]
        rng.shuffle(group)
        n_val = round(len(group) * val_share) if len(group) > 1 else 0
        for i, sample in enumerate(group):
            sample.split = "val" if i < n_val else "train"


def _write(out: Path, samples: list[Sample], classes: list[str]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    used: set[tuple[str, str]] = set()
    for sample in sorted(samples, key=lambda s: (str(s.split), s.stem)):
        split = str(sample.split)
        if (split, sample.stem) in used:
            raise DatasetError(f"two images share the id {sample.stem!r} in split {split}; rename one")
        used.add((split, sample.stem))
        for sub in ("images", "labels"):
            (out / sub / split).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sample.image, out / "images" / split / f"{sample.stem}{sample.image.suffix.lower()}")
        w, h = sample.width, sample.height
        rows = []
        tally = counts.setdefault(split, {"images": 0, "defect_free": 0} | dict.fromkeys(classes, 0))
        tally["images"] += 1
        tally["defect_free"] += 0 if sample.boxes else 1
        for box in sample.boxes:
            cx, cy = (box.x1 + box.x2) / 2 / w, (box.y1 + box.y2) / 2 / h
            bw, bh = (box.x2 - box.x1) / w, (box.y2 - box.y1) / h
            rows.append(f"{classes.index(box.name)} {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f}\n")
            tally[box.name] += 1
        (out / "labels" / split / f"{sample.stem}.txt").write_text("".join(rows))
    splits = {split: f"images/{split}" for split in sorted(counts)}
    data = {"train": splits.get("train", ""), "val": splits.get("val", "")}
    # calib stays out of data.yaml: ultralytics reads that file, and calib is never trained on.
    data |= {k: v for k, v in splits.items() if k not in data and k != CALIB_SPLIT}
    data_yaml = {k: v for k, v in data.items() if v} | {"names": dict(enumerate(classes))}
    (out / "data.yaml").write_text(yaml.safe_dump(data_yaml, sort_keys=False))
    return counts
