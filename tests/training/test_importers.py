"""Importing YOLO, Pascal VOC (with NEU-DET's quirks) and Label Studio exports as dataset versions."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from lineguard.cli import main
from lineguard.errors import DatasetError, InputError
from lineguard.messages import DatasetManifest
from lineguard.training.importers import import_dataset


def _image(path: Path, w: int = 64, h: int = 48) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((h, w, 3), 120, np.uint8))


def _voc_xml(path: Path, filename: str, objects: list[tuple[str, int, int, int, int]]) -> None:
    body = "".join(
        f"<object><name>{n}</name><difficult>0</difficult><bndbox><xmin>{a}</xmin><ymin>{b}</ymin>"
        f"<xmax>{c}</xmax><ymax>{d}</ymax></bndbox></object>"
        for n, a, b, c, d in objects
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"<annotation><folder>x</folder><filename>{filename}</filename>"
        f"<size><width>64</width><height>48</height><depth>1</depth></size>{body}</annotation>"
    )


def _labels(root: Path, split: str, stem: str) -> list[list[float]]:
    text = (root / "labels" / split / f"{stem}.txt").read_text()
    return [[float(v) for v in line.split()] for line in text.splitlines()]


@pytest.fixture
def neu_like(tmp_path: Path) -> Path:
    """A tiny VOC set with NEU-DET's quirks: <filename> without extension, mixed-class images."""
    src = tmp_path / "neu"
    for stem in ("crazing_1", "crazing_2", "patches_1", "patches_2", "scratches_1", "scratches_2"):
        _image(src / "IMAGES" / f"{stem}.jpg")
    _voc_xml(src / "ANNOTATIONS" / "crazing_1.xml", "crazing_1.jpg", [("crazing", 2, 2, 60, 40)])
    _voc_xml(
        src / "ANNOTATIONS" / "crazing_2.xml", "crazing_2", [("crazing", 10, 10, 30, 30)]
    )  # no extension
    # A patches_* image whose boxes are inclusion + patches: the class comes from <name>.
    _voc_xml(
        src / "ANNOTATIONS" / "patches_1.xml",
        "patches_1.jpg",
        [("inclusion", 0, 0, 16, 12), ("patches", 32, 24, 64, 48)],
    )
    _voc_xml(src / "ANNOTATIONS" / "patches_2.xml", "patches_2", [("patches", 5, 5, 20, 20)])
    _voc_xml(src / "ANNOTATIONS" / "scratches_1.xml", "scratches_1.jpg", [("scratches", 1, 1, 9, 40)])
    _voc_xml(src / "ANNOTATIONS" / "scratches_2.xml", "scratches_2.jpg", [("inclusion", 3, 3, 8, 8)])
    (src / "splits").mkdir()
    (src / "splits" / "train.txt").write_text("crazing_1\npatches_1\nscratches_1\ncrazing_2\n")
    (src / "splits" / "val.txt").write_text("patches_2\nscratches_2\n")
    return src


def test_voc_import_takes_class_from_name_and_split_from_lists(neu_like: Path, tmp_path: Path) -> None:
    out = tmp_path / "v1"
    splits = [neu_like / "splits" / "train.txt", neu_like / "splits" / "val.txt"]
    report = import_dataset("voc", neu_like, out, split_from=splits)

    assert report.manifest.classes == ["crazing", "inclusion", "patches", "scratches"]
    assert report.images == {"train": 4, "val": 2}
    assert report.skipped == {}
    # Mixed classes in one image, boxes normalised to the real image size (64 x 48).
    rows = _labels(out, "train", "patches_1")
    assert [int(r[0]) for r in rows] == [1, 2]
    assert rows[0][1:] == pytest.approx([8 / 64, 6 / 48, 16 / 64, 12 / 48], abs=1e-6)
    # <filename> without an extension still finds crazing_2.jpg by the XML's own stem.
    assert (out / "images" / "train" / "crazing_2.jpg").is_file()
    assert [int(r[0]) for r in _labels(out, "val", "scratches_2")] == [1]  # inclusion, not scratches
    manifest = DatasetManifest.load(out)
    assert manifest.verify(out) == []
    assert manifest.counts["val"]["inclusion"] == 1
    assert yaml.safe_load((out / "data.yaml").read_text())["names"][3] == "scratches"


def test_voc_box_outside_image_is_skipped_and_counted(neu_like: Path, tmp_path: Path) -> None:
    _voc_xml(neu_like / "ANNOTATIONS" / "crazing_1.xml", "crazing_1.jpg", [("crazing", 2, 2, 90, 40)])

    report = import_dataset("voc", neu_like, tmp_path / "v1")

    assert report.skipped == {"box_outside_image": 1}
    assert sum(report.images.values()) == 5
    assert DatasetManifest.load(tmp_path / "v1").skipped == {"box_outside_image": 1}


def test_strict_import_refuses_to_skip(neu_like: Path, tmp_path: Path) -> None:
    (neu_like / "IMAGES" / "patches_2.jpg").unlink()

    with pytest.raises(DatasetError, match="missing_image"):
        import_dataset("voc", neu_like, tmp_path / "v1", strict=True)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("missing_image", "missing_image"),
        ("unknown_class", "unknown_class"),
        ("not_listed", "not_in_split_lists"),
    ],
)
def test_bad_voc_inputs_are_counted_by_reason(
    neu_like: Path, tmp_path: Path, change: str, reason: str
) -> None:
    classes = None
    if change == "missing_image":
        (neu_like / "IMAGES" / "patches_2.jpg").unlink()
    elif change == "unknown_class":
        classes = ["crazing", "inclusion", "patches"]  # no scratches: scratches_1 is left out
    splits = [neu_like / "splits" / "train.txt", neu_like / "splits" / "val.txt"]
    if change == "not_listed":
        (neu_like / "splits" / "val.txt").write_text("patches_2\n")

    report = import_dataset("voc", neu_like, tmp_path / "v1", split_from=splits, classes=classes)

    assert report.skipped.get(reason) == 1
    assert sum(report.images.values()) == 5


@pytest.mark.parametrize("fmt", ["voc", "yolo"])
def test_empty_source_is_a_clear_error(tmp_path: Path, fmt: str) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"no Pascal VOC|no data\.yaml"):
        import_dataset(fmt, tmp_path / "empty", tmp_path / "v1")


def test_yolo_import_keeps_the_source_splits(synthetic_dataset: Path, tmp_path: Path) -> None:
    source = DatasetManifest.load(synthetic_dataset)

    report = import_dataset("yolo", synthetic_dataset, tmp_path / "v1", parent=source.content_hash)

    assert report.manifest.classes == source.classes
    assert report.images == {"train": 36, "val": 12, "calib": 12}
    assert report.manifest.parent == source.content_hash
    for split in ("train", "val", "calib"):
        for key in ("images", "defect_free", *source.classes):
            assert report.manifest.counts[split][key] == source.counts[split][key]


def test_yolo_label_with_unknown_class_id_is_counted(synthetic_dataset: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    import shutil

    shutil.copytree(synthetic_dataset, src)
    label = next(p for p in sorted((src / "labels" / "train").glob("*.txt")) if p.read_text().strip())
    label.write_text("9 0.5 0.5 0.1 0.1\n")

    report = import_dataset("yolo", src, tmp_path / "v1")

    assert report.skipped == {"unknown_class": 1}
    assert report.images["train"] == 35


def test_seeded_split_is_stratified_and_repeatable(neu_like: Path, tmp_path: Path) -> None:
    a = import_dataset("voc", neu_like, tmp_path / "a", val_share=0.5, seed=3)
    b = import_dataset("voc", neu_like, tmp_path / "b", val_share=0.5, seed=3)

    assert a.images == b.images
    assert sorted(p.name for p in (tmp_path / "a" / "images" / "val").iterdir()) == sorted(
        p.name for p in (tmp_path / "b" / "images" / "val").iterdir()
    )
    # Each main class with two images sends one to val.
    assert a.images["val"] >= 2


def test_import_holds_out_a_calib_split_disjoint_from_train_and_val_and_stable(
    neu_like: Path, tmp_path: Path
) -> None:
    for n in range(3, 40):  # enough images for every split to get some
        _image(neu_like / "IMAGES" / f"crazing_{n}.jpg")
        _voc_xml(neu_like / "ANNOTATIONS" / f"crazing_{n}.xml", f"crazing_{n}.jpg", [("crazing", 2, 2, 9, 9)])

    def names(root: Path, split: str) -> set[str]:
        return {p.stem for p in (root / "images" / split).iterdir()}

    report = import_dataset("voc", neu_like, tmp_path / "a", calib_share=0.25)
    a = tmp_path / "a"
    calib, train, val = names(a, "calib"), names(a, "train"), names(a, "val")
    assert report.images["calib"] == len(calib) >= 5
    assert not calib & train and not calib & val and len(calib | train | val) == 43
    assert DatasetManifest.load(a).counts["calib"]["images"] == len(calib)
    assert "calib" not in yaml.safe_load((a / "data.yaml").read_text())  # training never points at it

    # A later version with more images and another seed keeps every calib image out of training.
    for n in range(40, 50):
        _image(neu_like / "IMAGES" / f"crazing_{n}.jpg")
        _voc_xml(neu_like / "ANNOTATIONS" / f"crazing_{n}.xml", f"crazing_{n}.jpg", [("crazing", 2, 2, 9, 9)])
    import_dataset("voc", neu_like, tmp_path / "b", calib_share=0.25, seed=5)
    assert calib <= names(tmp_path / "b", "calib")

    none = import_dataset("voc", neu_like, tmp_path / "c", calib_share=0.0)
    assert "calib" not in none.images
    with pytest.raises(InputError, match="--calib-share"):
        import_dataset("voc", neu_like, tmp_path / "d", val_share=0.5, calib_share=0.5)


def test_labelstudio_export_is_imported_with_provenance(tmp_path: Path) -> None:
    images = tmp_path / "media"
    _image(images / "unit_a.png", 100, 50)
    _image(images / "unit_b.png", 100, 50)
    _image(images / "unit_c.png", 100, 50)
    rect = {
        "type": "rectanglelabels",
        "original_width": 100,
        "original_height": 50,
        "value": {"x": 10, "y": 20, "width": 30, "height": 40, "rotation": 0, "rectanglelabels": ["scratch"]},
    }

    def task(tid: int, url: str, annotation: dict[str, object]) -> dict[str, object]:
        return {"id": tid, "data": {"image": url}, "annotations": [annotation]}

    tasks = [
        task(1, "/data/upload/1/1a2b3c4d-unit_a.png", {"id": 11, "result": [rect]}),
        task(2, f"/data/local-files/?d={images / 'unit_b.png'}", {"id": 12, "result": []}),
        task(3, "/data/upload/1/unit_c.png", {"id": 13, "was_cancelled": True, "result": [rect]}),
    ]
    export = tmp_path / "export.json"
    export.write_text(json.dumps(tasks))

    report = import_dataset("labelstudio", export, tmp_path / "v1", image_dirs=[images], val_share=0.5)

    assert report.skipped == {"unlabeled_task": 1}
    assert sum(report.images.values()) == 2
    manifest = report.manifest
    assert manifest.classes == ["scratch"]
    assert manifest.provenance["unit_a"] == ["task:1", "annotation:11"]
    split_a = next(
        s for s in ("train", "val", "calib") if (tmp_path / "v1" / "labels" / s / "unit_a.txt").exists()
    )
    assert _labels(tmp_path / "v1", split_a, "unit_a") == [pytest.approx([0, 0.25, 0.4, 0.3, 0.4])]
    split_b = next(
        s for s in ("train", "val", "calib") if (tmp_path / "v1" / "labels" / s / "unit_b.txt").exists()
    )
    assert _labels(tmp_path / "v1", split_b, "unit_b") == []  # labeled defect-free


def test_cli_import_reports_counts(
    neu_like: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lists = f"{neu_like / 'splits' / 'train.txt'},{neu_like / 'splits' / 'val.txt'}"
    code = main(
        [
            "data",
            "import",
            "--format",
            "voc",
            str(neu_like),
            "--out",
            str(tmp_path / "v1"),
            "--split-from",
            lists,
        ]
    )

    assert code == 0
    assert "train 4, val 2 images" in capsys.readouterr().out


def test_cli_import_error_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()

    code = main(["data", "import", "--format", "voc", str(tmp_path / "empty"), "--out", str(tmp_path / "v1")])

    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: no Pascal VOC .xml files")
    assert err.count("\n") == 1
