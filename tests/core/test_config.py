"""Station configuration: defaults, YAML, environment overrides and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from lineguard.config import LineguardConfig, Profile, load_config
from lineguard.errors import ConfigError


def test_defaults_load_without_a_file() -> None:
    cfg = load_config(environ={})
    assert cfg.station.profile is Profile.DEVELOPMENT
    assert cfg.policy.deadline_ms == 200.0
    assert cfg.topic_prefix == "lineguard/line1/station1/"


def test_yaml_values_override_defaults(tmp_path: Path) -> None:
    path = tmp_path / "station.yaml"
    path.write_text("station:\n  line: l7\n  station: press-2\nmqtt:\n  port: 1884\n")
    cfg = load_config(path, environ={})
    assert (cfg.station.line, cfg.station.station, cfg.mqtt.port) == ("l7", "press-2", 1884)
    assert cfg.topic_prefix == "lineguard/l7/press-2/"


def test_environment_overrides_file_and_parses_types(tmp_path: Path) -> None:
    path = tmp_path / "station.yaml"
    path.write_text("mqtt:\n  port: 1884\n")
    env = {"LINEGUARD_MQTT__PORT": "2883", "LINEGUARD_POLICY__DEADLINE_MS": "150", "OTHER": "x"}
    cfg = load_config(path, environ=env)
    assert cfg.mqtt.port == 2883
    assert cfg.policy.deadline_ms == 150.0


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("mqtt:\n  prot: 1\n", "mqtt.prot: unknown key"),
        ("mqtt:\n  port: many\n", "mqtt.port: Input should be a valid integer"),
        ("policy:\n  deadline_ms: -5\n", "policy.deadline_ms: Input should be greater than 0"),
        ("camera:\n  kind: webcam\n", "camera.kind"),
        ("- just\n- a list\n", "must hold a mapping"),
        ("mqtt: [unclosed\n", "not valid YAML at line"),
        (
            "policy:\n  class_thresholds: {scratch: 0.1}\n",
            "policy.class_thresholds.scratch 0.1 is below policy.min_confidence 0.05 + "
            "policy.review_band 0.1, so its uncertain band can never fire; raise it to at least 0.15",
        ),
        ("registry:\n  follow: 'a/#'\n", "registry.follow: String should match pattern"),
        (
            "registry:\n  follow: demo\nmqtt:\n  enabled: false\n",
            "registry.follow (demo) arrives over MQTT but mqtt.enabled is false",
        ),
        (
            "policy:\n  quality: {min_brightness: 200, max_brightness: 100}\n",
            "min_brightness (200) must be below max_brightness (100)",
        ),
    ],
)
def test_bad_config_names_the_key_in_one_line(tmp_path: Path, yaml_text: str, expected: str) -> None:
    path = tmp_path / "station.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_unrelated_variables_are_ignored_but_bad_section_paths_are_errors() -> None:
    assert load_config(environ={"LINEGUARD_CACHE_DIR": "/tmp/x"}).mqtt.port == 1883
    with pytest.raises(ConfigError, match="mqt: unknown key"):
        load_config(environ={"LINEGUARD_MQT__HOST": "broker"})


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml", environ={})


def test_production_profile_refuses_plaintext_and_anonymous() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(environ={"LINEGUARD_STATION__PROFILE": "production"})
    assert "mqtt.tls" in str(info.value)
    assert "http.token_file" in str(info.value)


def test_production_profile_accepts_tls_credentials_and_token(tmp_path: Path) -> None:
    cfg = LineguardConfig.model_validate(
        {
            "station": {"profile": "production"},
            "mqtt": {
                "username": "edge",
                "password_file": str(tmp_path / "pw"),
                "tls": {"ca_file": str(tmp_path / "ca.pem")},
            },
            "http": {"token_file": str(tmp_path / "token")},
            "registry": {"public_keys": [str(tmp_path / "registry-signing.pub")]},
        }
    )
    assert cfg.station.profile is Profile.PRODUCTION


def test_production_profile_refuses_to_start_without_a_pinned_registry_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(
            environ={},
            overrides={
                "station": {"profile": "production"},
                "mqtt": {"enabled": False},
                "http": {"enabled": False},
                "registry": {"public_url": "http://reg:8081"},
            },
        )
    message = str(info.value)
    assert "\n" not in message
    assert "registry.public_keys" in message and "lineguard registry keygen" in message
    assert "registry.public_url over https://" in message


def test_example_config_loads() -> None:
    example = Path(__file__).parents[2] / "configs" / "station.example.yaml"
    if not example.exists():
        pytest.fail("configs/station.example.yaml is missing")
    load_config(example, environ={})
