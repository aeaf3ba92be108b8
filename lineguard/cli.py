"""The ``lineguard`` command: one entry point whose sub-commands live with the part they drive.

Each part exposes a click group in its own ``cli`` module; this module only wires them in, and
imports a part when its command runs, so ``lineguard --help`` works on an edge install without
torch. A ``LineguardError`` or a usage mistake becomes one line on stderr and exit code 2, never a
traceback.
"""

from __future__ import annotations

import importlib
import sys

import click

from lineguard import __version__
from lineguard.errors import LineguardError, MissingDependencyError

__all__ = ["cli", "main"]

# command name -> (module, attribute, one-line help shown by `lineguard --help`)
_COMMANDS: dict[str, tuple[str, str, str]] = {
    "data": ("lineguard.training.data_cli", "data", "Make, import and inspect dataset versions."),
    "train": ("lineguard.training.cli", "train", "Train a detector on a dataset version."),
    "evaluate": ("lineguard.training.cli", "evaluate", "Evaluate a .pt or .onnx model."),
    "calibrate": (
        "lineguard.training.cli",
        "calibrate",
        "Tune and check thresholds on the calib split, per variant.",
    ),
    "export": ("lineguard.training.cli", "export", "Export a run to ONNX + model card."),
    "model": ("lineguard.training.model_cli", "model", "Import a YOLO .pt/.onnx you trained elsewhere."),
    "edge": ("lineguard.edge.cli", "edge", "Run and check the edge inspection daemon."),
    "outbox": ("lineguard.edge.outbox_cli", "outbox", "Check the verdict outbox; move a damaged one aside."),
    "verdicts": ("lineguard.edge.verdicts_cli", "verdicts", "Watch verdicts on MQTT."),
    "bench": ("lineguard.benchmarks.cli", "bench", "Latency and accuracy benchmarks."),
    "registry": ("lineguard.registry.cli", "registry", "Model versions, stages and rollout."),
    "label": ("lineguard.labeling.cli", "label", "Label Studio: set up, send, pull."),
    "monitor": ("lineguard.monitoring.cli", "monitor", "Drift and metrics reports."),
    "demo": ("lineguard.demo", "demo", "Run the whole loop on a synthetic line."),
    "retrain": ("lineguard.retrain", "retrain_command", "QA labels -> fine-tune -> gate -> promote."),
    "doctor": ("lineguard.edge.doctor", "doctor", "Check a station's config and connections."),
}

# Top-level packages whose absence means an extra is missing, and which extra brings them.
_EXTRAS = {
    "cv2": "edge",
    "onnxruntime": "edge",
    "paho": "edge",
    "fastapi": "edge",
    "prometheus_client": "edge",
    "torch": "train",
    "ultralytics": "train",
    "albumentations": "train",
    "onnx": "train",
    "label_studio_sdk": "label",
    "openvino": "openvino",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = _COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module_name, attr, short_help = entry
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            top = (exc.name or "").split(".")[0]
            if top in _EXTRAS:
                raise MissingDependencyError(top, _EXTRAS[top]) from exc
            if (exc.name or "").startswith("lineguard"):
                return _not_yet(cmd_name, short_help)
            raise
        command = getattr(module, attr, None)
        if not isinstance(command, click.Command):
            return _not_yet(cmd_name, short_help)
        command.short_help = short_help
        return command


def _not_yet(name: str, short_help: str) -> click.Command:
    @click.command(name=name, short_help=f"{short_help} (not built yet)")
    def placeholder() -> None:
        raise LineguardError(f"'lineguard {name}' is not part of this version yet")

    return placeholder


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lineguard")
def cli() -> None:
    """lineguard: real-time visual inspection for production lines."""


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user mistakes exit 2 with one line, never a traceback."""
    try:
        result = cli.main(args=argv, prog_name="lineguard", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
        return 2
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
        click.echo(f"error: {exc.format_message()}{hint}", err=True)
        return 2
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        return exc.exit_code
    except LineguardError as exc:
        click.echo(f"error: {exc}", err=True)
        return 2
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
