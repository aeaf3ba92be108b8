"""Canary rollouts: a new production version reaches a few stations first, and halts itself.

The trust rule does not change: a station runs only a signed *production* release. So a canary
rollout promotes the version to production in the registry, then publishes its retained
``…/model`` message in two waves: wave 1 to the canary stations only, wave 2 (after the soak) to
every follower and to ``lineguard/models/<name>/production``. Between the waves the registry
watches the canaries' own verdicts, alerts and feedback (``FleetWatch``), counting only units
decided by the new version, against a reference: the same line under the previous version (the
canaries before they swapped plus a few other followers during the soak). A crossed guard rail
halts: production goes back to the previous version (``Registry.rollback``) and that is published
to the canaries, so no other station ever sees the new one. Every step is an event in the
registry history (``canary_start``, ``rollout``, ``canary_passed`` or ``canary_halted``,
``rollback``, ``canary_done``), which ``lineguard registry history`` and ``rollout status`` show.

Canaries must follow the model in the registry (``registry follow``): only those have a topic of
their own that wave 1 can address. Stations that follow by configuration take the new version in
wave 2.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lineguard.config import CanaryPlan, MqttConfig
from lineguard.errors import InputError, LineguardError
from lineguard.registry.fleet_watch import FleetWatch, Tally
from lineguard.registry.rollout import publish_model
from lineguard.registry.store import Registry, StationFollow
from lineguard.releases import Signer

__all__ = ["CanaryRollout", "Judgement", "RolloutResult", "judge", "pick_canaries"]

POLL_S = 0.5
STATUS_SETTLE_S = 3.0  # retained statuses arrive right after subscribing; a follower without one is offline
PROGRESS_EVERY_S = 5.0


def _name(st: StationFollow) -> str:
    return f"{st.line}/{st.station}"


def _spread(items: list[StationFollow], count: int) -> list[StationFollow]:
    """``count`` of ``items`` evenly spaced (so a fraction does not take one line's first stations)."""
    if count <= 0:
        return []
    if count >= len(items):
        return list(items)
    step = len(items) / count
    return [items[int(i * step)] for i in range(count)]


def pick_canaries(
    followers: list[StationFollow], plan: CanaryPlan, online: set[str] | None = None
) -> tuple[list[StationFollow], list[StationFollow]]:
    """(canaries, the rest) among the model's followers; ``InputError`` naming what is wrong.

    With ``online`` (``LINE/STATION`` names whose status says online) a canary must be online: a
    named one that is not is refused before anything moves, a fraction is drawn from those online.
    """
    if not followers:
        raise InputError(
            "no station follows this model; add them with 'lineguard registry follow LINE/STATION NAME'"
        )
    ordered = sorted(followers, key=_name)
    if plan.canary.stations:
        by_name = {_name(st): st for st in ordered}
        unknown = [s for s in plan.canary.stations if s not in by_name]
        if unknown:
            known = ", ".join(list(by_name)[:10]) + (" …" if len(by_name) > 10 else "")
            raise InputError(
                f"canary {unknown[0]} does not follow the model (followers: {known}); "
                "'lineguard registry follow' it first or pick a follower"
            )
        away = [s for s in plan.canary.stations if online is not None and s not in online]
        if away:
            raise InputError(
                f"canary {away[0]} is not online (its retained status says offline, or it has none); "
                "start it or pick another canary"
            )
        chosen = [by_name[s] for s in dict.fromkeys(plan.canary.stations)]
    else:
        count = max(1, math.ceil(round(plan.canary.fraction * len(ordered), 9)))
        pool = [st for st in ordered if online is None or _name(st) in online]
        if len(pool) < count:
            raise InputError(
                f"{count} canaries wanted ({plan.canary.fraction:g} of {len(ordered)} followers) but only "
                f"{len(pool)} followers are online; start them or lower canary.fraction"
            )
        chosen = _spread(pool, count)
    names = {_name(st) for st in chosen}
    return chosen, [st for st in ordered if _name(st) not in names]


@dataclass(frozen=True)
class Judgement:
    """Where the soak stands: ``halt`` says why it must stop; ``passed`` when the rest may follow."""

    halt: str
    passed: bool
    canary: Tally
    reference: Tally
    errors: int
    escapes: int

    def line(self) -> str:
        c, r = self.canary, self.reference
        return (
            f"canaries {c.units} units: FAIL {c.fail_rate:.1%}, NO_DECISION {c.no_decision_rate:.1%}, "
            f"deadline {c.deadline_rate:.1%}, model errors {self.errors}, escapes {self.escapes}; "
            f"reference {r.units} units: FAIL {r.fail_rate:.1%}, NO_DECISION {r.no_decision_rate:.1%}"
        )

    def detail(self) -> dict[str, Any]:
        c, r = self.canary, self.reference
        return {
            "canary": {
                "units": c.units,
                "fail": c.fail,
                "no_decision": c.no_decision,
                "deadline": c.deadline,
            },
            "reference": {"units": r.units, "fail": r.fail, "no_decision": r.no_decision},
            "model_errors": self.errors,
            "feedback_escapes": self.escapes,
        }


def judge(
    plan: CanaryPlan,
    per_canary: dict[str, Tally],
    reference: Tally,
    *,
    alerts: int = 0,
    escapes: int = 0,
    soaked_s: float = 0.0,
) -> Judgement:
    """The guard rails on the canaries' units of the new version, pooled, against the reference.

    Model errors and escapes halt at once; the rates are judged once the canaries together have
    decided ``soak.units`` (one canary's worth), the relative ones only with
    ``guards.min_reference_units`` of reference. The soak passes when every canary has decided
    ``soak.units``, ``soak.minutes`` have gone by and no rail is crossed.
    """
    g = plan.guards
    canary = sum(per_canary.values(), Tally())
    errors = canary.error + alerts
    reasons: list[str] = []
    if errors > g.max_model_errors:
        reasons.append(
            f"{errors} model errors (error verdicts and model alerts; at most {g.max_model_errors})"
        )
    if escapes > g.max_feedback_escapes:
        reasons.append(f"{escapes} escapes confirmed by feedback (at most {g.max_feedback_escapes})")
    has_reference = reference.units >= g.min_reference_units
    if canary.units >= plan.soak.units:
        if canary.deadline_rate > g.max_deadline_miss_rate:
            reasons.append(
                f"deadline misses {canary.deadline_rate:.1%} (at most {g.max_deadline_miss_rate:.1%})"
            )
        if has_reference and canary.fail_rate > reference.fail_rate + g.max_fail_increase:
            reasons.append(
                f"FAIL rate {canary.fail_rate:.1%} vs {reference.fail_rate:.1%} under the previous version "
                f"(at most +{g.max_fail_increase:.1%})"
            )
        if (
            has_reference
            and canary.no_decision_rate > reference.no_decision_rate + g.max_no_decision_increase
        ):
            reasons.append(
                f"NO_DECISION rate {canary.no_decision_rate:.1%} vs {reference.no_decision_rate:.1%} under "
                f"the previous version (at most +{g.max_no_decision_increase:.1%})"
            )
    soaked = (
        all(t.units >= plan.soak.units for t in per_canary.values()) and soaked_s >= plan.soak.minutes * 60
    )
    halt = "; ".join(reasons)
    return Judgement(halt, not halt and soaked and has_reference, canary, reference, errors, escapes)


@dataclass
class RolloutResult:
    """What happened: halted or not and why, the canaries, and when each step ended (``time.time()``)."""

    name: str
    version: str
    previous: str
    canaries: list[str]
    rest: list[str]
    halted: bool = False
    reason: str = ""
    steps: dict[str, float] = field(default_factory=dict)
    judgement: Judgement | None = None
    adopted: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    watched: dict[str, dict[str, int]] = field(default_factory=dict)  # what the registry received


class CanaryRollout:
    """One canary rollout of ``name:version``: ``start`` (check the plan, watch), ``run(promote)``, ``close``.

    ``promote`` is called between the two so that the gate and the stage change happen the way
    ``registry promote`` does them, after the watch has begun (the canaries' verdicts under the
    previous version are part of the reference). ``say`` gets the progress lines.
    """

    def __init__(
        self,
        registry: Registry,
        name: str,
        version: str,
        plan: CanaryPlan,
        mqtt_cfg: MqttConfig,
        *,
        public_url: str = "",
        signer: Signer | None = None,
        by: str | None = None,
        say: Callable[[str], None] = lambda _line: None,
    ) -> None:
        self.registry = registry
        self.name = name
        self.version = version
        self.plan = plan
        self.mqtt_cfg = mqtt_cfg
        self.public_url = public_url
        self.signer = signer
        self.by = by
        self.say = say
        self.watch: FleetWatch | None = None
        self.canaries: list[StationFollow] = []
        self.rest: list[StationFollow] = []
        self.previous = ""
        self.reference_names: list[str] = []

    def start(self) -> CanaryRollout:
        """Check that a canary rollout makes sense here, pick the canaries and begin watching."""
        self.registry.get(self.name, self.version)  # an unknown version fails before anything moves
        current = self.registry.production(self.name)
        if current is None:
            raise InputError(
                f"{self.name} has no production version yet, so a canary has nothing to return to; "
                f"release the first one with 'lineguard registry promote {self.name}:{self.version} "
                "--to production'"
            )
        if current.version == self.version:
            raise InputError(f"{self.name}:{self.version} is already production; nothing to roll out")
        self.previous = current.version
        followers = self.registry.stations(self.name)
        self.watch = FleetWatch(self.mqtt_cfg, self.name).start()
        try:
            self.watch.settle([_name(st) for st in followers], STATUS_SETTLE_S)
            online = {n for n, s in self.watch.statuses().items() if s.state == "online"}
            self.canaries, self.rest = pick_canaries(followers, self.plan, online)
            canary_names = [_name(st) for st in self.canaries]
            others = [st for st in self.rest if _name(st) in online]
            self.reference_names = [_name(st) for st in _spread(others, self.plan.guards.reference_stations)]
            self.watch.judge([*canary_names, *self.reference_names])
        except BaseException:
            self.close()
            raise
        self.say(
            f"canary rollout of {self.name}:{self.version} (previous {self.previous}): "
            f"{len(self.canaries)} canaries ({', '.join(canary_names)}), {len(self.rest)} stations after them"
        )
        return self

    def close(self) -> None:
        if self.watch is not None:
            self.watch.stop()
            self.watch = None

    # -- the waves -----------------------------------------------------------------------------
    def _publish(self, stations: list[StationFollow] | None) -> None:
        publish_model(
            self.registry,
            self.name,
            self.mqtt_cfg,
            public_url=self.public_url,
            stations=stations,
            signer=self.signer,
        )

    def _record(self, action: str, version: str, why: str, detail: dict[str, Any]) -> None:
        self.registry.record(self.name, version, action, by=self.by, why=why, detail=detail)

    def _wait_for(self, stations: list[str], version: str, timeout_s: float, what: str) -> list[str]:
        """Wait until each station reports ``version``; return those that did not in time."""
        assert self.watch is not None
        deadline = time.monotonic() + timeout_s
        last_said = time.monotonic()
        while True:
            running = self.watch.running()
            missing = [s for s in stations if running.get(s) != version]
            if not missing or time.monotonic() >= deadline:
                return missing
            if time.monotonic() - last_said >= PROGRESS_EVERY_S:
                last_said = time.monotonic()
                self.say(f"{what}: {len(stations) - len(missing)}/{len(stations)} stations run {version}")
            time.sleep(POLL_S)

    def run(self, promote: Callable[[], object]) -> RolloutResult:
        """Promote, wave 1, soak, then wave 2 or halt and roll back; every step recorded."""
        assert self.watch is not None, "start() first"
        canaries = [_name(st) for st in self.canaries]
        result = RolloutResult(
            self.name, self.version, self.previous, canaries, [_name(st) for st in self.rest]
        )
        promote()
        self._record(
            "canary_start",
            self.version,
            f"canaries {', '.join(canaries)}; {len(self.rest)} stations after them",
            {"plan": self.plan.model_dump(mode="json"), "canaries": canaries, "previous": self.previous},
        )
        began = time.time()
        result.steps["promoted"] = began
        try:
            self._publish(self.canaries)
            result.steps["wave1_published"] = time.time()
            self.say(f"wave 1: {self.name}:{self.version} published to {len(canaries)} canaries")
            judgement = self._soak(canaries, began, result)
        except (LineguardError, KeyboardInterrupt) as exc:  # the new version must not stay production
            why = "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc)
            judgement = Judgement(
                f"the rollout stopped before its soak ended: {why}", False, Tally(), Tally(), 0, 0
            )
        if judgement.halt:
            self._halt(result, judgement)
        else:
            self._complete(result, judgement)
        result.watched = self.watch.traffic()
        return result

    def _soak(self, canaries: list[str], began: float, result: RolloutResult) -> Judgement:
        """Watch the canaries until a rail is crossed, the soak passes, or time runs out."""
        assert self.watch is not None
        plan, watch = self.plan, self.watch
        swap_deadline = time.monotonic() + plan.soak.swap_timeout_s
        deadline = time.monotonic() + plan.soak.timeout_minutes * 60
        swapped_at: float | None = None
        last_said = time.monotonic()
        reference_stations = [*canaries, *self.reference_names]
        while True:
            judgement = judge(
                plan,
                {s: watch.tally([s], self.version) for s in canaries},
                watch.tally(reference_stations, self.previous),
                alerts=len(watch.model_alerts(canaries, began)),
                escapes=watch.escapes(canaries, self.version),
                soaked_s=0.0 if swapped_at is None else time.monotonic() - swapped_at,
            )
            if swapped_at is None:
                waiting = [s for s in canaries if watch.took(s, self.version) is None]
                if not waiting:
                    swapped_at = time.monotonic()
                    result.steps["canaries_swapped"] = time.time()
                    self.say(f"soak: every canary runs {self.version}; watching their units")
                elif time.monotonic() >= swap_deadline and not judgement.halt:
                    why = (
                        f"{len(waiting)} canaries did not report {self.version} within "
                        f"{plan.soak.swap_timeout_s:g} s ({', '.join(waiting[:5])})"
                    )
                    return Judgement(
                        why, False, judgement.canary, judgement.reference, judgement.errors, judgement.escapes
                    )
            if judgement.halt or judgement.passed:
                return judgement
            if time.monotonic() >= deadline:
                why = (
                    f"the soak did not end within {plan.soak.timeout_minutes:g} minutes ({judgement.line()})"
                )
                return Judgement(
                    why, False, judgement.canary, judgement.reference, judgement.errors, judgement.escapes
                )
            if time.monotonic() - last_said >= PROGRESS_EVERY_S:
                last_said = time.monotonic()
                self.say(f"soak: {judgement.line()}")
            time.sleep(POLL_S)

    def _halt(self, result: RolloutResult, judgement: Judgement) -> None:
        result.halted, result.reason, result.judgement = True, judgement.halt, judgement
        result.steps["halted"] = time.time()
        self.say(f"HALT: {judgement.halt}")
        self._record("canary_halted", self.version, judgement.halt, judgement.detail())
        back = self.registry.rollback(self.name, by=self.by, why=f"canary halted: {judgement.halt}"[:500])
        self._publish(self.canaries)
        self.say(f"rolled back: {self.name}:{back.version} is production again and published to the canaries")
        missing = self._wait_for(result.canaries, back.version, self.plan.soak.swap_timeout_s, "rollback")
        result.steps["rolled_back"] = time.time()
        self._record(
            "canary_done",
            back.version,
            f"halted {self.version}; canaries back on {back.version}"
            + (f"; not confirmed by {', '.join(missing[:5])}" if missing else ""),
            {"halted": True, "canaries": result.canaries, "not_confirmed": missing},
        )

    def _complete(self, result: RolloutResult, judgement: Judgement) -> None:
        result.judgement = judgement
        result.steps["soak_passed"] = time.time()
        self.say(f"soak passed: {judgement.line()}")
        self._record("canary_passed", self.version, judgement.line(), judgement.detail())
        self._publish(None)  # wave 2: every follower and the follow-by-config topic
        result.steps["wave2_published"] = time.time()
        self.say(
            f"wave 2: {self.name}:{self.version} published to all "
            f"{len(result.canaries) + len(result.rest)} followers"
        )
        everyone = [*result.canaries, *result.rest]
        result.missing = self._wait_for(everyone, self.version, self.plan.soak.adoption_timeout_s, "wave 2")
        result.adopted = [s for s in everyone if s not in result.missing]
        result.steps["done"] = time.time()
        self.say(
            f"done: {len(result.adopted)}/{len(everyone)} followers run {self.version}"
            + (f"; not yet: {', '.join(result.missing[:10])}" if result.missing else "")
        )
        self._record(
            "canary_done",
            self.version,
            f"{len(result.adopted)}/{len(everyone)} followers run {self.version}",
            {"halted": False, "adopted": len(result.adopted), "not_confirmed": result.missing},
        )
