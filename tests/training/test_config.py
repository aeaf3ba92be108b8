"""The training config: YAML + options, unknown keys refused with their path."""

from __future__ import annotations

from pathlib import Path

import pytest

from lineguard.errors import ConfigError
from lineguard.training.config import load_train_config


def test_yaml_values_and_given_options_win_over_defaults(tmp_path: Path) -> None:
    path = tmp_path / "train.yaml"
    path.write_text("epochs: 7\nimgsz: 160\naugment:\n  rotate: 0.0\n")

    cfg = load_train_config(path, {"imgsz": 224, "seed": None})

    assert (cfg.epochs, cfg.imgsz, cfg.seed) == (7, 224, 0)
    assert cfg.augment.rotate == 0.0


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", None),
        ("epoch: 5\n", "epoch: unknown key"),
        ("augment:\n  hflp: 0.5\n", "augment.hflp: unknown key"),
        ("batch: -1\n", "batch"),
        ("- a\n", "mapping"),
        ("epochs: [1\n", "not valid YAML"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, text: str, needle: str | None) -> None:
    path = tmp_path / "train.yaml"
    path.write_text(text)
    if needle is None:
        assert load_train_config(path).epochs == 50
        return
    with pytest.raises(ConfigError, match=needle):
        load_train_config(path)


def test_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_train_config(tmp_path / "nope.yaml")


def test_training_example_names_every_setting_with_its_default() -> None:
    """configs/train.example.yaml is the written-down form of TrainConfig: same keys, same defaults."""
    import yaml

    from lineguard.training.config import TrainConfig

    example = Path(__file__).parents[2] / "configs" / "train.example.yaml"
    written = yaml.safe_load(example.read_text())
    defaults = TrainConfig().model_dump(mode="json")
    assert load_train_config(example).model_dump(mode="json") == defaults
    assert set(written) == set(defaults) and set(written["augment"]) == set(defaults["augment"])
