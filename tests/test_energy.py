"""Energy per bucket from a power meter's cumulative reading: attribution, resets, bad readings, no meter."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from edge_agent.config import AgentConfig
from edge_agent.counters import MeterTracker
from edge_agent.engine import PlantEngine, config_fingerprint
from edge_agent.eventlog import Event, SampleLine, StartLine, TickLine
from edge_agent.kpi import ClosedBucket
from edge_agent.recompute import replay
from tests.test_recompute import one_machine_raw


def utc(h: int, m: int = 0, s: float = 0) -> datetime:
    return datetime(2026, 3, 2, h, m, tzinfo=UTC) + timedelta(seconds=s)  # a Monday, planned all day


def meter_raw() -> dict[str, Any]:
    """M1 with a meter counting whole Wh (scale 0.001 to kWh); M2 on the same device without one."""
    raw = one_machine_raw()
    raw["machines"][0]["counters"] = {"parts": "parts", "energy": "energy_wh", "energy_scale": 0.001}
    raw["machines"].append({**raw["machines"][0], "id": "M2", "counters": {"parts": "parts"}})
    raw["devices"][0]["tags"].append({"name": "energy_wh", "area": "input", "address": 2, "type": "uint32"})
    raw["kpi"] = {"max_lateness_s": 10}
    return raw


Reading = tuple[datetime, float | None, datetime | None]  # agent time, value (None: a bad read), source time


def meter_log(config: AgentConfig, readings: list[Reading]) -> list[Event]:
    """An agent started at 08:00 reading the meter; a tick after every reading."""
    log: list[Event] = [StartLine(start=utc(8), boot_id="b", speed=1.0, config_sha256=config_fingerprint(config))]
    for at, value, source in readings:
        good = value is not None
        reason = None if good else "no answer"
        log.append(
            SampleLine(device="plc", tag="energy_wh", value=value, good=good, at=at, source_at=source, reason=reason)
        )
        log.append(TickLine(tick=at))
    return log


def live_and_replayed(config: AgentConfig, log: list[Event]) -> dict[str, list[ClosedBucket]]:
    """The buckets the live engine closes; `edgeproof kpi`'s replay of the same log must give the same."""
    engine = PlantEngine(config)
    live: dict[str, list[ClosedBucket]] = {m.id: [] for m in config.machines}
    for event in log:
        if isinstance(event, StartLine):
            engine.start(event.start)
        elif isinstance(event, SampleLine):
            engine.ingest([event.sample()])
        else:
            for machine, closed in engine.evaluate(event.tick).buckets.items():
                live[machine] += closed
    assert replay(config, log).buckets == live
    return live


def test_meter_increase_goes_to_the_bucket_of_each_reading() -> None:
    config = AgentConfig.model_validate(meter_raw())
    readings: list[Reading] = [
        (utc(8), 1_000, None),  # the first reading is the baseline
        (utc(8, 20), 1_400, None),  # +400
        (utc(8, 30), math.nan, None),  # a float register holding garbage: no reading
        (utc(8, 35), math.inf, None),
        (utc(8, 40), None, None),  # a failed read
        (utc(8, 59, 50), 2_000, None),  # +600: 08:00 has 1 000 Wh
        (utc(9, 0, 10), 2_050, None),  # +50 since 08:59:50, all of it at this reading's time: the 09:00 bucket
        (utc(9, 15), 30, None),  # the meter was replaced: a new baseline, nothing counted, never negative
        (utc(9, 30), 530, None),  # +500
        # an OPC UA meter's source times: 09:39:59 reaches the agent after 09:40:00, within the lateness
        (utc(9, 40, 1), 700, utc(9, 40)),
        (utc(9, 40, 2), 690, utc(9, 39, 59)),  # in time order: 530 -> 690 -> 700 -> 800, +270
        (utc(9, 50), 800, utc(9, 50)),
        # no reading from 10:00 to 11:00: the 10:00 bucket has none, what the meter counted meanwhile
        # goes to the bucket of the next reading (the meter is cumulative: nothing lost, nothing invented)
        (utc(11, 0, 30), 1_100, None),
        (utc(12, 0, 20), 1_100, None),  # a tick past 12:00 + the lateness closes the 11:00 bucket
    ]
    buckets = live_and_replayed(config, meter_log(config, readings))
    energy = {b.start.hour: b.elements.energy_kwh for b in buckets["M1"]}
    assert energy == {
        8: pytest.approx(1.0, abs=1e-12),
        9: pytest.approx(0.82, abs=1e-12),  # 50 + 500 + 270 Wh
        10: 0.0,  # metered, nothing read: zero, not unknown (the time elements show the missing coverage)
        11: pytest.approx(0.3, abs=1e-12),
    }
    # a machine without a meter has no energy, and its buckets carry no energy field on the wire
    assert [b.elements.energy_kwh for b in buckets["M2"]] == [None, None, None, None]
    assert "energy_kwh" not in buckets["M2"][0].elements.model_dump(mode="json")
    assert buckets["M1"][0].elements.model_dump(mode="json")["energy_kwh"] == 1.0


def test_a_meter_reading_after_its_bucket_closed_goes_to_the_first_open_bucket() -> None:
    config = AgentConfig.model_validate(meter_raw())
    readings: list[Reading] = [
        (utc(8, 59), 100, utc(8, 59)),
        (utc(9, 0, 20), None, None),  # a failed read; its tick closes 08:00 (09:00 + the lateness has passed)
        (utc(9, 0, 25), 130, utc(8, 59, 55)),  # 30 s on its way: its own bucket closed, so +30 Wh at 09:00
        (utc(9, 0, 30), 120, utc(8, 59, 50)),  # older than a reading already processed: too late, ignored
        (utc(9, 0, 40), 160, utc(9, 0, 40)),  # +30 since 130
        (utc(10, 0, 20), 160, utc(10, 0, 20)),
    ]
    h8, h9 = live_and_replayed(config, meter_log(config, readings))["M1"]
    assert (h8.elements.energy_kwh, h9.elements.energy_kwh) == (0.0, pytest.approx(0.06, abs=1e-12))
    # meter readings are not part-counter events: the counter_* elements describe the part and scrap counters
    assert (h8.elements.counter_late, h9.elements.counter_late, h9.elements.counter_resets) == (0, 0, 0)


def test_meter_tracker_never_counts_a_decrease() -> None:
    m = MeterTracker()
    assert [m.update(v) for v in (5.5, 7.25, 7.25, 2.0, 3.5)] == [0.0, 1.75, 0.0, 0.0, 1.5]
    assert m.event is None and m.last == 3.5
    m.update(1.0)
    assert m.event == "reset"
