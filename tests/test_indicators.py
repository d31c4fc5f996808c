"""Indicator maths on hand-computed cases, including the two public worked examples."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeproof.indicators import (
    ProcessInfo,
    RegisteredMachine,
    TimeElements,
    oee,
    score_points,
    site_ratios,
    total,
)


def test_vorne_shift_example() -> None:
    # 480 min shift, 60 min break, 47 min down, ideal cycle 1 s, 19 271 parts, 423 rejects
    te = TimeElements(
        pot_s=480 * 60, pdot_s=60 * 60, apt_s=(420 - 47) * 60, pq=19271, sq=423, ideal_run_s=19271, ideal_good_s=18848
    )
    r = oee(te)
    assert r.availability.value == pytest.approx(0.888095, abs=1e-6)
    assert r.performance.value == pytest.approx(0.861081, abs=1e-6)
    assert r.quality.value == pytest.approx(0.978050, abs=1e-6)
    assert r.oee.value == pytest.approx(0.747937, abs=1e-6)
    assert (r.oee.numerator, r.oee.denominator) == (18848, 25200)


def test_influxdata_flux_example() -> None:
    # planned 8 h, running 0-2 h and 3-4 h, ideal cycle 30 s, count 1200 -> 1440, bad 10 -> 14
    pq, sq = 1440 - 1200, 14 - 10
    te = TimeElements(pot_s=8 * 3600, apt_s=3 * 3600, pq=pq, sq=sq, ideal_run_s=30 * pq, ideal_good_s=30 * (pq - sq))
    r = oee(te)
    assert r.availability.value == pytest.approx(0.375)
    assert r.performance.value == pytest.approx(0.666667, abs=1e-6)
    assert r.quality.value == pytest.approx(0.983333, abs=1e-6)
    assert r.oee.value == pytest.approx(0.245833, abs=1e-6)


def test_no_planned_time_makes_every_ratio_null() -> None:
    r = oee(TimeElements(window_s=3600, observed_s=3600))
    assert [x.value for x in (r.availability, r.performance, r.quality, r.oee)] == [None] * 4
    assert r.availability.null_reason == "no planned busy time"


def test_no_production_gives_null_quality_and_zero_oee() -> None:
    r = oee(TimeElements(pot_s=3600, idle_s=3600))
    assert r.availability.value == 0.0
    assert r.quality.value is None and r.quality.null_reason == "no production"
    assert r.oee.value == 0.0
    assert r.performance.value is None


def test_unknown_cycle_time_nulls_performance_and_oee() -> None:
    r = oee(TimeElements(pot_s=3600, apt_s=1800, pq=10, ideal_known=False))
    assert r.performance.value is None and r.performance.null_reason == "unknown cycle time"
    assert r.oee.value is None
    assert r.availability.value == 0.5
    assert r.quality.value == 1.0


def test_unknown_time_is_excluded_from_availability() -> None:
    # 3600 s planned busy, 600 s without data, 2400 s running: A = 2400 / 3000
    r = oee(TimeElements(pot_s=3600, apt_s=2400, idle_s=600, unknown_s=600))
    assert r.availability.value == pytest.approx(0.8)
    all_unknown = oee(TimeElements(pot_s=3600, unknown_s=3600))
    assert all_unknown.availability.value is None
    assert all_unknown.availability.null_reason == "no data in planned busy time"


def test_performance_over_100_is_kept_and_flagged() -> None:
    r = oee(TimeElements(pot_s=100, apt_s=100, pq=12, ideal_run_s=120, ideal_good_s=120))
    assert r.performance.value == pytest.approx(1.2)
    assert "performance_over_100" in r.flags


@pytest.mark.parametrize(
    ("ratio", "points"),
    [(0.0, 0.0), (0.10, 0.0), (0.1001, 1.5), (0.20, 1.5), (0.30, 3.0), (0.40, 3.0), (0.41, 4.5), (0.60, 4.5),
     (0.61, 6.0), (1.0, 6.0), (None, None)],
)
def test_official_score_bands(ratio: float | None, points: float | None) -> None:
    assert score_points(ratio) == points


def _machines() -> list[RegisteredMachine]:
    return [
        RegisteredMachine(machine_id="C1", process="turn", digital=True, nc_capable=True, acquired=True),
        RegisteredMachine(machine_id="C2", process="mill", digital=True, nc_capable=True, acquired=False),
        RegisteredMachine(machine_id="P1", process="press", digital=True, nc_capable=True, acquired=True),
        RegisteredMachine(machine_id="L1", process="drill", digital=False, nc_capable=False, acquired=False),
        RegisteredMachine(machine_id="L2", process="saw", digital=False, nc_capable=False, acquired=False),
    ]


def test_site_ratios_count_only_machines_with_enough_good_data() -> None:
    processes = [
        ProcessInfo(process_id="turn", key=True),
        ProcessInfo(process_id="mill", key=True),
        ProcessInfo(process_id="press", key=True),
        ProcessInfo(process_id="drill", key=True),
        ProcessInfo(process_id="saw", key=False),
    ]
    # C1 covered 95 % (networked); P1 only 80 % (not networked at the 90 % threshold)
    r = site_ratios(_machines(), processes, {"C1": 3420, "P1": 2880}, 3600, 0.9)
    assert (r.networking_rate.numerator, r.networking_rate.denominator) == (1, 5)
    assert r.networking_rate.value == pytest.approx(0.2) and r.networking_rate.band_points == 1.5
    assert r.digitalisation_rate.value == pytest.approx(0.6) and r.digitalisation_rate.band_points == 4.5
    assert r.networked_over_digital.value == pytest.approx(1 / 3)
    basis = {p.process_id: p.basis for p in r.key_processes}
    # turn measured (C1 networked), mill declared (C2 not acquired), press fails (P1 acquired but not networked)
    assert basis == {"turn": "measured", "mill": "declared", "press": "none", "drill": "none"}
    assert (r.nc_rate_key_processes.numerator, r.nc_rate_key_processes.denominator) == (2, 4)
    coverage = {c.machine_id: c.coverage for c in r.coverage}
    assert coverage["C1"] == pytest.approx(0.95) and coverage["L1"] == 0.0


def test_empty_register_ratios_are_null() -> None:
    r = site_ratios([], [], {}, 3600)
    assert r.networking_rate.value is None and r.networking_rate.null_reason == "empty asset register"
    assert r.nc_rate_key_processes.value is None


@st.composite
def _elements(draw: st.DrawFn) -> TimeElements:
    # the agent's time elements are whole microseconds; so are these
    pbt_us = draw(st.integers(1_000_000, 86_400_000_000))
    unknown_us = draw(st.integers(0, pbt_us // 2))
    apt_us = draw(st.integers(1, pbt_us - unknown_us))
    pq = draw(st.integers(1, 10_000))
    sq = draw(st.integers(0, pq))
    cycle = draw(st.floats(0.1, 600))
    return TimeElements(
        pot_s=pbt_us / 1e6,
        apt_s=apt_us / 1e6,
        unknown_s=unknown_us / 1e6,
        pq=pq,
        sq=sq,
        ideal_run_s=cycle * pq,
        ideal_good_s=cycle * (pq - sq),
    )


@given(_elements())
def test_oee_equals_a_times_p_times_q(te: TimeElements) -> None:
    r = oee(te)
    assert r.availability.value is not None and r.availability.value <= 1 + 1e-9
    product = r.availability.value * r.performance.value * r.quality.value  # type: ignore[operator]
    assert r.oee.value == pytest.approx(product, rel=1e-9, abs=1e-12)


@given(st.lists(_elements(), min_size=1, max_size=6))
def test_rollup_sums_elements_never_averages_ratios(parts: list[TimeElements]) -> None:
    rolled = total(parts)
    assert rolled.pq == sum(p.pq for p in parts)
    expected = sum(p.ideal_good_s for p in parts) / sum(p.observed_pbt_s for p in parts)
    assert oee(rolled).oee.value == pytest.approx(expected)
