"""Indicator maths, exactly as defined in docs/indicators.md.

Pure functions over sums of time elements and counts, shared by the agent (per bucket) and the
cloud (per evidence window), so both sides compute a ratio the same way. Roll-ups add
`TimeElements` and divide afterwards; ratios are never averaged.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    SerializerFunctionWrapHandler,
    model_serializer,
)

# (upper bound inclusive, points) of the 2024 SME digital-level form, equipment items.
SCORE_BANDS: tuple[tuple[float, float], ...] = ((0.10, 0.0), (0.20, 1.5), (0.40, 3.0), (0.60, 4.5), (1.00, 6.0))
DEFAULT_NETWORKED_MIN_COVERAGE = 0.9
PERFORMANCE_OVER_100 = "performance_over_100"
RUNNING_IN_PLANNED_STOP = "running_in_planned_stop"
COUNTER_JUMPS_REJECTED = "counter_jumps_rejected"


def score_points(value: float | None) -> float | None:
    """Points (0-6) of the official band that contains `value`; None for an undefined ratio."""
    if value is None:
        return None
    for upper, points in SCORE_BANDS:
        if value <= upper + 1e-12:
            return points
    return SCORE_BANDS[-1][1]


class Ratio(BaseModel):
    """A ratio with what it was computed from; `value` is None when undefined, with the reason."""

    numerator: float
    denominator: float
    value: float | None
    null_reason: str | None = None

    @classmethod
    def of(cls, numerator: float, denominator: float, null_reason: str = "zero denominator") -> Ratio:
        if denominator <= 0:
            return cls(numerator=numerator, denominator=denominator, value=None, null_reason=null_reason)
        return cls(numerator=numerator, denominator=denominator, value=numerator / denominator)


class ScoredRatio(Ratio):
    band_points: float | None = None

    @classmethod
    def scored(cls, numerator: float, denominator: float, null_reason: str = "zero denominator") -> ScoredRatio:
        r = Ratio.of(numerator, denominator, null_reason)
        return cls(**r.model_dump(), band_points=score_points(r.value))


class TimeElements(BaseModel):
    """ISO 22400-2 time elements (seconds) and counts of one machine over one window.

    `unknown_s` is planned busy time without good data: it is excluded from the availability
    denominator and shown as missing coverage, never counted as running or stopped.
    Validated on the wire (non-negative, finite, no unknown fields); the agent's integrator
    mutates it in place while a bucket is open.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    window_s: NonNegativeFloat = 0.0
    observed_s: NonNegativeFloat = Field(0.0, description="time with good data, over the whole window")
    pot_s: NonNegativeFloat = Field(0.0, description="planned operation time (shift calendar)")
    pdot_s: NonNegativeFloat = Field(0.0, description="planned downtime inside shifts (breaks)")
    apt_s: NonNegativeFloat = Field(0.0, description="actual production time: RUNNING inside planned busy time")
    setup_s: NonNegativeFloat = 0.0
    idle_s: NonNegativeFloat = 0.0
    micro_stop_s: NonNegativeFloat = 0.0
    fault_s: NonNegativeFloat = 0.0
    unknown_s: NonNegativeFloat = Field(0.0, description="planned busy time with no good data")
    running_in_planned_stop_s: NonNegativeFloat = 0.0
    pq: NonNegativeFloat = Field(0.0, description="produced quantity")
    sq: NonNegativeFloat = Field(0.0, description="scrap quantity")
    ideal_run_s: NonNegativeFloat = Field(0.0, description="sum of PRU x PQ over products")
    ideal_good_s: NonNegativeFloat = Field(0.0, description="sum of PRU x GQ over products")
    counter_wraps: NonNegativeInt = Field(0, description="counter rollovers (16/32/64 bit) detected")
    counter_resets: NonNegativeInt = Field(0, description="counter resets detected (counting restarted from zero)")
    counter_jumps: NonNegativeInt = Field(0, description="implausible counter deltas rejected, parts not counted")
    counter_duplicates: NonNegativeInt = Field(0, description="counter samples with a time already seen, ignored")
    counter_late: NonNegativeInt = Field(0, description="counter samples later than the allowed lateness, ignored")
    ideal_known: bool = Field(True, description="False when some produced part had no ideal cycle time")
    energy_kwh: NonNegativeFloat | None = Field(
        None, description="active energy metered over the bucket (kWh); None: no power meter configured"
    )

    # time elements are exact to the microsecond; rounding keeps float sums such as 3600.0000000000005
    # minus 3600.0 from leaving a 1e-12 s denominator where there is none
    @property
    def pbt_s(self) -> float:
        return round(self.pot_s - self.pdot_s, 6)

    @property
    def gq(self) -> float:
        return self.pq - self.sq

    @property
    def observed_pbt_s(self) -> float:
        return round(self.pbt_s - self.unknown_s, 6)

    def __add__(self, other: TimeElements) -> TimeElements:
        fields = {name: getattr(self, name) + getattr(other, name) for name in _ADDITIVE}
        energy = [e for e in (self.energy_kwh, other.energy_kwh) if e is not None]
        return TimeElements(
            **fields, ideal_known=self.ideal_known and other.ideal_known, energy_kwh=sum(energy) if energy else None
        )

    # Fields added after contract v1 shipped are left out while unset (None), on the wire and in the
    # signed bytes, so that messages signed before they existed still verify.
    @model_serializer(mode="wrap")
    def _omit_unset_additions(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if data.get("energy_kwh", 0) is None:
            del data["energy_kwh"]
        return data


_ADDITIVE = [name for name in TimeElements.model_fields if name not in ("ideal_known", "energy_kwh")]


def total(elements: Iterable[TimeElements]) -> TimeElements:
    acc = TimeElements()
    for e in elements:
        acc = acc + e
    return acc


class Oee(BaseModel):
    availability: Ratio
    performance: Ratio
    quality: Ratio
    oee: Ratio
    flags: list[str] = Field(default_factory=list)


def oee(te: TimeElements) -> Oee:
    """A = APT / observed PBT, P = Σ(PRU·PQ) / APT, Q = GQ / PQ, OEE = Σ(PRU·GQ) / observed PBT.

    Undefined ratios are None with a reason: no planned time → all None; no production → Q None,
    OEE 0; unknown cycle time → P and OEE None.
    """
    denominator = te.observed_pbt_s
    no_plan = "no planned busy time" if te.pbt_s <= 0 else "no data in planned busy time"
    availability = Ratio.of(te.apt_s, denominator, no_plan)
    quality = Ratio.of(te.gq, te.pq, "no production")
    if denominator <= 0:
        performance = Ratio.of(te.ideal_run_s, 0.0, no_plan)
        overall = Ratio.of(te.ideal_good_s, 0.0, no_plan)
    elif not te.ideal_known:
        performance = Ratio(numerator=0, denominator=te.apt_s, value=None, null_reason="unknown cycle time")
        overall = Ratio(numerator=0, denominator=denominator, value=None, null_reason="unknown cycle time")
    else:
        performance = Ratio.of(te.ideal_run_s, te.apt_s, "no running time")
        overall = Ratio.of(te.ideal_good_s, denominator, no_plan)
    flags = []
    if performance.value is not None and performance.value > 1.0:
        flags.append(PERFORMANCE_OVER_100)
    if te.running_in_planned_stop_s > 0:
        flags.append(RUNNING_IN_PLANNED_STOP)
    if te.counter_jumps > 0:
        flags.append(COUNTER_JUMPS_REJECTED)
    return Oee(availability=availability, performance=performance, quality=quality, oee=overall, flags=flags)


NO_METER = "no power meter"


def capacity_utilisation(te: TimeElements) -> Ratio:
    """产能利用率: output at the ideal cycle time ÷ planned busy time with data, Σ(PRU·PQ) / observed PBT.

    The output the machine could have made in the planned time at its ideal cycle is the capacity;
    this is A × P, including scrap (ISO 22400-2 defines no capacity ratio; see docs/indicators.md).
    """
    denominator = te.observed_pbt_s
    if denominator <= 0:
        return Ratio.of(
            te.ideal_run_s, 0.0, "no planned busy time" if te.pbt_s <= 0 else "no data in planned busy time"
        )
    if not te.ideal_known:
        return Ratio(numerator=0, denominator=denominator, value=None, null_reason="unknown cycle time")
    return Ratio.of(te.ideal_run_s, denominator)


def energy_per_good_part(te: TimeElements) -> Ratio:
    """单件能耗: metered active energy (kWh) ÷ good quantity; undefined without a meter or good parts."""
    if te.energy_kwh is None:
        return Ratio(numerator=0, denominator=te.gq, value=None, null_reason=NO_METER)
    return Ratio.of(te.energy_kwh, te.gq, "no good parts")


class RegisteredMachine(BaseModel):
    """What the site ratios need to know about one machine of the asset register."""

    machine_id: str
    process: str | None = None
    digital: bool
    nc_capable: bool
    acquired: bool = Field(description="configured for data acquisition by the agent")


class ProcessInfo(BaseModel):
    process_id: str
    key: bool


class MachineCoverage(BaseModel):
    machine_id: str
    observed_s: float
    window_s: float
    coverage: float | None
    networked: bool


class ProcessNc(BaseModel):
    process_id: str
    nc: bool
    basis: str = Field(description="measured | declared | none")
    machines: list[str]


class SiteRatios(BaseModel):
    networking_rate: ScoredRatio
    digitalisation_rate: ScoredRatio
    networked_over_digital: Ratio
    nc_rate_key_processes: Ratio
    coverage: list[MachineCoverage]
    key_processes: list[ProcessNc]
    networked_min_coverage: float


def site_ratios(
    machines: list[RegisteredMachine],
    processes: list[ProcessInfo],
    observed_s: dict[str, float],
    window_s: float,
    networked_min_coverage: float = DEFAULT_NETWORKED_MIN_COVERAGE,
) -> SiteRatios:
    """Networking, digitalisation and key-process NC rates over one window.

    A machine is networked when good data covered at least `networked_min_coverage` of the
    window. A key process is NC when one of its machines is NC-capable and, if that machine is
    acquired by the agent, it was networked in the window (basis "measured"); an NC-capable
    machine that is not acquired counts on the register's word (basis "declared").
    """
    coverage: list[MachineCoverage] = []
    networked: set[str] = set()
    for m in machines:
        seen = observed_s.get(m.machine_id, 0.0)
        cov = seen / window_s if window_s > 0 else None
        is_networked = cov is not None and cov >= networked_min_coverage - 1e-12
        if is_networked:
            networked.add(m.machine_id)
        coverage.append(
            MachineCoverage(
                machine_id=m.machine_id, observed_s=seen, window_s=window_s, coverage=cov, networked=is_networked
            )
        )
    digital = [m for m in machines if m.digital]
    key_processes: list[ProcessNc] = []
    for p in processes:
        if not p.key:
            continue
        members = [m for m in machines if m.process == p.process_id]
        measured = [m for m in members if m.nc_capable and m.acquired and m.machine_id in networked]
        declared = [m for m in members if m.nc_capable and not m.acquired]
        basis = "measured" if measured else "declared" if declared else "none"
        key_processes.append(
            ProcessNc(
                process_id=p.process_id, nc=basis != "none", basis=basis, machines=[m.machine_id for m in members]
            )
        )
    return SiteRatios(
        networking_rate=ScoredRatio.scored(len(networked), len(machines), "empty asset register"),
        digitalisation_rate=ScoredRatio.scored(len(digital), len(machines), "empty asset register"),
        networked_over_digital=Ratio.of(
            len([m for m in digital if m.machine_id in networked]), len(digital), "no digital equipment"
        ),
        nc_rate_key_processes=Ratio.of(sum(1 for p in key_processes if p.nc), len(key_processes), "no key processes"),
        coverage=coverage,
        key_processes=key_processes,
        networked_min_coverage=networked_min_coverage,
    )
