"""Ground truth of one phase: what really happened on every machine inside the phase window.

The end-to-end tests compare what the evaluator sees with this file, so it is computed from the
plant model directly (never from served registers) and uses the same indicator maths as the
product (`edgeproof.indicators`). Format: docs/simulators.md.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from edgeproof.clock import ClockSpec
from edgeproof.indicators import TimeElements, oee
from simulators.plant import MachinePlant, State
from simulators.scenario import Interface, Scenario
from simulators.shifts import Plan, epoch


def iso_z(t: datetime | int) -> str:
    """ISO 8601 in UTC with a Z, whole seconds."""
    if isinstance(t, int):
        t = datetime.fromtimestamp(t, UTC)
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class TruthWindow(BaseModel):
    start: str
    end: str


class MachineTruth(BaseModel):
    interface: Interface
    exposed: bool
    ideal_cycle_s: float
    states_s: dict[State, float]
    intervals: list[tuple[State, str, str]]
    pq: int
    sq: int
    elements: TimeElements
    oee: dict[str, Any]


class TruthDocument(BaseModel):
    scenario: str
    seed: int
    phase: str
    window: TruthWindow
    clock: ClockSpec
    port_base: int | None
    exposed: list[str]
    machines: dict[str, MachineTruth]


def machine_truth(plant: MachinePlant, start: datetime, end: datetime, exposed: bool) -> MachineTruth:
    a, b = epoch(start), epoch(end)
    states_s = dict.fromkeys(State, 0.0)
    intervals: list[tuple[State, str, str]] = []
    for iv in plant.intervals:
        lo, hi = max(iv.start, a), min(iv.end, b)
        if hi > lo:
            states_s[iv.state] += hi - lo
            intervals.append((iv.state, iso_z(lo), iso_z(hi)))
    plan_s = dict.fromkeys(Plan, 0.0)
    for seg in plant.segments:
        plan_s[seg.plan] += max(0, min(seg.end, b) - max(seg.start, a))
    # Differences of unwrapped counts: the served registers may wrap, the truth never does.
    pq = plant.parts_at(end) - plant.parts_at(start)
    sq = plant.scrap_at(end) - plant.scrap_at(start)
    cycle = plant.machine.ideal_cycle_s
    # the exact integral of the power model, where a meter serves it: only the PLC map has one (holding 9-10)
    metered = plant.machine.interface == "modbus"
    energy = plant.energy_kwh_at(end) - plant.energy_kwh_at(start) if metered else None
    elements = TimeElements(
        window_s=b - a,
        observed_s=b - a,
        pot_s=plan_s[Plan.BUSY] + plan_s[Plan.BREAK],
        pdot_s=plan_s[Plan.BREAK],
        apt_s=states_s[State.RUNNING],  # the model only runs inside planned busy time
        setup_s=states_s[State.SETUP],
        idle_s=states_s[State.IDLE],
        micro_stop_s=states_s[State.MICRO_STOP],  # an availability loss, as the agent books it by default (ISO)
        fault_s=states_s[State.FAULT],
        unknown_s=0.0,
        pq=pq,
        sq=sq,
        ideal_run_s=cycle * pq,
        ideal_good_s=cycle * (pq - sq),
        energy_kwh=energy,
    )
    return MachineTruth(
        interface=plant.machine.interface,
        exposed=exposed,
        ideal_cycle_s=cycle,
        states_s=states_s,
        intervals=intervals,
        pq=pq,
        sq=sq,
        elements=elements,
        oee=oee(elements).model_dump(mode="json"),
    )


def build_truth(
    scenario: Scenario,
    phase: str,
    plants: dict[str, MachinePlant],
    clock: ClockSpec | None = None,
    port_base: int | None = None,
) -> TruthDocument:
    ph = scenario.phase(phase)
    exposed = [m.id for m in scenario.machines if m.id in ph.exposed]
    return TruthDocument(
        scenario=scenario.scenario,
        seed=scenario.seed,
        phase=phase,
        window=TruthWindow(start=iso_z(ph.window.start), end=iso_z(ph.window.end)),
        clock=clock or ClockSpec(),
        port_base=port_base,
        exposed=exposed,
        machines={
            mid: machine_truth(plant, ph.window.start, ph.window.end, mid in exposed) for mid, plant in plants.items()
        },
    )


def write_truth(path: Path, doc: TruthDocument) -> None:
    """Write atomically, so a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(doc.model_dump_json(indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
