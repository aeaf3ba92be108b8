"""Model references: ``name@production`` (or ``name@staging``, ``name@<version>``) wherever a model
path is asked for.

One rule places a registered version on disk as a folder a station or a command can load like any
export: ``<registry.root>/models/<name>/<version>/`` holds ``model.onnx`` and ``model_card.json``,
and ``<registry.root>/models/<name>/<stage>`` points at the version that holds the stage. The
registry writes that layout (``lineguard.registry.store``); configuration and commands resolve a
reference through this module alone, so neither needs the registry's database.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

import click

from lineguard.errors import InputError
from lineguard.messages import MODEL_NAME, MODEL_VERSION

__all__ = ["MODEL_REF", "ModelPathType", "is_model_ref", "model_folder", "resolve_model_path"]

MODEL_REF: Final = re.compile(rf"(?P<name>{MODEL_NAME.pattern})@(?P<ref>{MODEL_VERSION.pattern})")


def is_model_ref(value: str | Path) -> bool:
    """True for ``name@ref`` text that is not an existing file (a path may contain '@' too)."""
    text = str(value)
    return MODEL_REF.fullmatch(text) is not None and not Path(text).exists()


def model_folder(registry_root: Path, name: str, ref: str) -> Path:
    """Where version or stage ``ref`` of ``name`` lies in a registry (``model.onnx`` + card)."""
    if not MODEL_NAME.fullmatch(name) or not MODEL_VERSION.fullmatch(ref):
        raise InputError(f"model reference {name}@{ref} is not of the form name@production|staging|version")
    return registry_root / "models" / name / ref


def resolve_model_path(value: str | Path, registry_root: Path) -> Path:
    """The ONNX file ``value`` names: a path as it is, or ``name@ref`` looked up in ``registry_root``."""
    if not is_model_ref(value):
        return Path(value)
    match = MODEL_REF.fullmatch(str(value))
    assert match is not None
    path = model_folder(registry_root, match["name"], match["ref"]) / "model.onnx"
    if not path.is_file():
        raise InputError(
            f"model reference {value}: the registry at {registry_root} has no such version or stage; "
            f"see 'lineguard registry list', or set registry.root"
        )
    return path


class ModelPathType(click.ParamType[Path, object]):
    """A ``--model`` option that takes an ONNX/.pt path, a model folder or ``name@ref`` in the registry.

    The registry is ``registry.root`` of the default configuration (``LINEGUARD_REGISTRY__ROOT``
    moves it), as for ``lineguard registry``.
    """

    name = "PATH|NAME@REF"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> Path:
        if isinstance(value, Path):
            return value
        from lineguard.config import load_config

        text = str(value)
        try:
            path = (
                resolve_model_path(text, load_config(None).registry.root)
                if is_model_ref(text)
                else Path(text)
            )
        except InputError as exc:
            self.fail(str(exc), param, ctx)
        if path.is_dir() and (path / "model.onnx").is_file():
            path = path / "model.onnx"  # a model folder, as export and model import write it
        if not path.is_file():
            self.fail(
                f"{text} is neither a model file nor a name@stage reference in the registry", param, ctx
            )
        return path
