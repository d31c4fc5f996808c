"""Roll-ups by hand, and properties of the engine: OEE invariant, availability bound, order-free counts."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.calendar import Buckets, ShiftCalendar
from edge_agent.config import Calendar
from edge_agent.kpi import ClosedBucket, MachineAccumulator
from edgeproof.indicators import TimeElements, oee, total
from edgeproof.rollup import BucketRecord, by_local_day, by_machine, by_process, by_site, rollup, rollup_oee, within

TZ = ZoneInfo("Asia/Shanghai")


def at(h: int, m: int = 0, s: float = 0) -> datetime:
    return datetime(2026, 3, 2, h, m, tzinfo=TZ) + timedelta(seconds=s)


def record(machine: str, hour: int, **elements: float) -> BucketRecord:
    return BucketRecord(
        machine_id=machine, start=at(hour), end=at(hour + 1), elements=TimeElements(window_s=3600, **elements)
    )


RECORDS = [
    record("M1", 7, pot_s=3600, apt_s=3000, idle_s=600, pq=40, sq=2, ideal_run_s=2400, ideal_good_s=2280),
    record("M1", 8, pot_s=3600, apt_s=1800, unknown_s=1800, pq=30, ideal_run_s=1800, ideal_good_s=1800),
    record("M2", 7, pot_s=3600, apt_s=3600, pq=100, sq=10, ideal_run_s=3000, ideal_good_s=2700),
    record("M2", 8),  # outside the shift
]


def test_rollups_sum_elements_then_divide() -> None:
    site = rollup_oee(RECORDS, by_site)["site"]
    # observed PBT 3600 + 1800 + 3600 = 9000 s; good ideal time 2280 + 1800 + 2700 = 6780 s
    assert (site.oee.numerator, site.oee.denominator) == (6780, 9000)
    assert site.availability.value == 8400 / 9000
    assert site.quality.value == 158 / 170
    machines = rollup_oee(RECORDS, by_machine)
    assert machines["M1"].oee.value == 4080 / 5400 and machines["M2"].oee.value == 2700 / 3600
    assert site.oee.value != (4080 / 5400 + 2700 / 3600) / 2  # never the mean of the ratios
    lines = rollup(RECORDS, by_process({"M1": "turning", "M2": "pressing"}))
    assert (lines["turning"].pq, lines["pressing"].pq, lines["pressing"].window_s) == (70, 100, 7200)
    assert list(rollup(RECORDS, by_local_day(TZ))) == [at(0).date()]
    first_hour = rollup(within(RECORDS, at(7), at(8)), by_site)["site"]
    assert (first_hour.apt_s, first_hour.pq) == (6600, 140)
    empty = rollup_oee([RECORDS[3]], by_site)["site"]
    assert empty.oee.value is None and empty.oee.null_reason == "no planned busy time"


_ADDITIVE = [n for n in TimeElements.model_fields if n != "ideal_known"]


@st.composite
def _records(draw: st.DrawFn) -> list[BucketRecord]:
    n = draw(st.integers(1, 12))
    out = []
    for i in range(n):
        pbt = draw(st.integers(0, 3_600_000_000)) / 1e6
        apt = draw(st.integers(0, int(pbt * 1e6))) / 1e6
        pq = draw(st.integers(0, 500))
        cycle = draw(st.sampled_from([0.5, 7.0, 42.0]))
        te = TimeElements(
            window_s=3600,
            pot_s=pbt,
            apt_s=apt,
            pq=pq,
            ideal_run_s=cycle * pq,
            ideal_good_s=cycle * pq,
            counter_wraps=i % 2,
        )
        out.append(
            BucketRecord(machine_id=draw(st.sampled_from("ABC")), start=at(i % 5), end=at(i % 5 + 1), elements=te)
        )
    return out


@given(_records(), st.sampled_from([by_machine, by_site]))
def test_rollup_of_groups_equals_rollup_of_all(records: list[BucketRecord], key: object) -> None:
    groups = rollup(records, key)  # type: ignore[arg-type]
    whole = total(r.elements for r in records)
    regrouped = total(groups.values())
    for name in _ADDITIVE:
        assert getattr(regrouped, name) == pytest.approx(getattr(whole, name), abs=1e-6)


# --- engine properties ---------------------------------------------------------------------

BREAK_CAL = Calendar.model_validate(
    {"shifts": [{"days": ["mon"], "start": "06:00", "end": "14:00", "breaks": [{"start": "08:00", "end": "08:15"}]}]}
)
STATES = ["RUNNING", "SETUP", "IDLE", "FAULT", "PLANNED_STOP", "UNKNOWN"]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1, 900), st.sampled_from(STATES), st.sampled_from([None, "E1"])), min_size=1, max_size=40
    ),
    st.sampled_from([0.0, 120.0]),
    st.sampled_from([0.0, 10.0]),
)
def test_every_bucket_adds_up_and_availability_is_at_most_one(
    steps: list[tuple[int, str, str | None]], micro: float, debounce: float
) -> None:
    acc = MachineAccumulator(
        "M", 60.0, ShiftCalendar(BREAK_CAL, TZ), Buckets(60, TZ), micro_stop_s=micro, min_running_s=debounce
    )
    acc.start(at(7))
    t = at(7)
    closed: list[ClosedBucket] = []
    for seconds, state, reason in steps:
        acc.advance(t, state, reason)
        closed += acc.close_buckets(t)
        t += timedelta(seconds=seconds)
    acc.advance(at(17), "UNKNOWN", None)
    closed += acc.close_buckets(at(17))
    assert [b.start for b in closed] == [at(h) for h in range(7, 17)]
    for b in closed:
        te = b.elements
        inside = te.apt_s + te.setup_s + te.idle_s + te.micro_stop_s + te.fault_s + te.unknown_s
        assert te.window_s == 3600
        assert inside + te.pdot_s == pytest.approx(te.pot_s, abs=1e-6)
        a = oee(te).availability.value
        assert a is None or a <= 1.0


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["O1", "O2", "O3"]), st.integers(0, 9), st.integers(0, 2)), min_size=1, max_size=50
    )
)
def test_oee_is_ideal_good_time_over_planned_busy_time(production: list[tuple[str, int, int]]) -> None:
    cycles = {"O1": 42.0, "O2": 7.5, "O3": 120.0}
    acc = MachineAccumulator("M", None, ShiftCalendar(BREAK_CAL, TZ), Buckets(60, TZ), ideal_cycle_by_program=cycles)
    acc.start(at(7))
    acc.advance(at(7), "RUNNING", None)
    parts = scrap = 0
    acc.count(at(7), 0, 0, "O1")
    expected = 0.0
    for i, (program, made, bad) in enumerate(production, start=1):
        bad = min(bad, made)
        parts, scrap = parts + made, scrap + bad
        acc.count(at(7, 0, i * 60), parts, scrap, program)
        expected += cycles[program] * (made - bad)
    acc.advance(at(8), "RUNNING", None)
    (h7,) = acc.close_buckets(at(8))
    r = oee(h7.elements)
    assert r.oee.value == pytest.approx(expected / 3600)
    te = h7.elements
    if te.ideal_run_s:  # with mixed products OEE = A x P x (quality weighted by ideal time), not x GQ / PQ
        assert r.oee.value == pytest.approx(
            r.availability.value * r.performance.value * te.ideal_good_s / te.ideal_run_s
        )


def _counts(arrivals: list[tuple[datetime, datetime, int]], lateness: float) -> list[tuple[datetime, float, int, int]]:
    acc = MachineAccumulator(
        "M", 60.0, ShiftCalendar(BREAK_CAL, TZ), Buckets(15, TZ), counter_bits=16, max_lateness_s=lateness
    )
    acc.start(at(7))
    closed: list[ClosedBucket] = []
    for arrival, t, value in arrivals:
        acc.advance(arrival, "RUNNING", None)
        acc.count(t, value, None)
        closed += acc.close_buckets(arrival)
    acc.advance(at(12), "RUNNING", None)
    closed += acc.close_buckets(at(12))
    return [(b.start, b.elements.pq, b.elements.counter_wraps, b.elements.counter_resets) for b in closed]


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 120), st.integers(0, 9)), min_size=1, max_size=60),
    st.sampled_from([5.0, 30.0]),
    st.randoms(use_true_random=False),
)
def test_shuffling_counter_samples_within_the_lateness_changes_nothing(
    steps: list[tuple[int, int]], lateness: float, rnd: random.Random
) -> None:
    t, value, samples = at(7), 65_500, []  # near the 16-bit top, so wraps happen
    for gap, made in steps:
        t += timedelta(seconds=gap)
        value = (value + made) % 65_536
        samples.append((t, value))
    in_order = [(s, s, v) for s, v in samples]
    delays = [timedelta(seconds=rnd.uniform(0, lateness)) for _ in samples]
    shuffled = sorted(((s + d, s, v) for (s, v), d in zip(samples, delays, strict=True)), key=lambda a: a[0])
    assert _counts(shuffled, lateness) == _counts(in_order, lateness)
