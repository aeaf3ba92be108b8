"""The training log states its epoch plan once and each epoch's line keeps to it."""

from __future__ import annotations

from types import SimpleNamespace

from lineguard.training.train import _epoch_reporter


def _lines(time_h: float | None, planned: list[int]) -> list[str]:
    """Epoch lines while ultralytics re-plans ``trainer.epochs`` as ``planned`` says (time budget)."""
    lines: list[str] = []
    report = _epoch_reporter(lines.append, time_h)
    for epoch, epochs in enumerate(planned):
        report(SimpleNamespace(epoch=epoch, epochs=epochs, metrics={}, tloss=None))
    return lines


def test_time_budget_lines_show_time_used_not_a_wandering_epoch_count() -> None:
    lines = _lines(0.5, [7, 8, 14])
    assert [line.split("  ")[0] for line in lines] == [
        "epoch 1 (0 of 30 min)",
        "epoch 2 (0 of 30 min)",
        "epoch 3 (0 of 30 min)",
    ]


def test_epoch_plan_lines_count_against_the_planned_epochs() -> None:
    heads = [line.split("  ")[0] for line in _lines(None, [3, 3, 3])]
    assert heads == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
