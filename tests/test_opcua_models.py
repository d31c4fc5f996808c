"""Machine-tool models: their tags, their built-in state rules against the simulator's signals, config checks."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from connectors.opcua import OpcUaDevice, OpcUaDeviceConfig
from connectors.opcua.models import MODELS
from connectors.sample import Sample
from edge_agent.config import load_config
from edge_agent.states import StateRules
from edgeproof.clock import ScaledClock
from edgeproof.configfile import ConfigError
from simulators.opcua_server import CncServer, cnc_values
from simulators.plant import Interval, Snapshot, State, build_plant
from simulators.scenario import load_scenario
from tests.netutil import free_port

T0 = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)

AGENT = """\
agent: {id: a1}
site: {firm: {name: F}, name: S}
machines:
  - {id: M1, name: Lathe, type: cnc_lathe, digital: true, device: d1, state_rules: umati_machinetool,
     counters: {parts: parts, scrap: rejected}}
  - {id: M2, name: Mill, type: cnc_mill, digital: true, device: d2, state_rules: cnc_40502}
devices:
  - {id: d1, protocol: opcua, url: "opc.tcp://127.0.0.1:4840/", model: umati_machinetool, machine_path: Machines/M1}
  - {id: d2, protocol: opcua, url: "opc.tcp://127.0.0.1:4841/", model: cnc_40502, machine_path: Machines/M2}
"""


@pytest.fixture(scope="module")
def rules(tmp_path_factory: pytest.TempPathFactory) -> dict[str, StateRules]:
    path = tmp_path_factory.mktemp("models") / "agent.yaml"
    path.write_text(AGENT, encoding="utf-8")
    config = load_config(path)
    return {name: StateRules(config.state_rules[name]) for name in MODELS}


def evaluate(rules: StateRules, model: str, values_by_path: dict[str, Any]) -> tuple[str, str | None]:
    """The state the built-in rules derive from the node values a machine serves."""
    samples = {tag: Sample("d", tag, values_by_path[path], True, T0) for tag, path in MODELS[model].tags.items()}
    return rules.evaluate(samples)


def simulated(state: State) -> dict[str, Any]:
    code = 104 if state is State.FAULT else 0
    return cnc_values(Snapshot(T0, Interval(0, 60, state, code, "O1001"), 12, 1, 3.0), 90.0)


# Breaks and unscheduled time look idle on the machine; the agent's shift calendar tells them apart.
EXPECTED = {
    State.RUNNING: ("RUNNING", None),
    State.IDLE: ("IDLE", None),
    State.MICRO_STOP: ("IDLE", None),  # served like IDLE; the agent calls it a micro-stop by its length
    State.SETUP: ("SETUP", None),
    State.FAULT: ("FAULT", "104"),
    State.PLANNED_STOP: ("IDLE", None),
    State.NOT_SCHEDULED: ("IDLE", None),
}


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("state", list(State))
def test_builtin_rules_map_every_simulated_state(rules: dict[str, StateRules], model: str, state: State) -> None:
    assert evaluate(rules[model], model, simulated(state)) == EXPECTED[state]


UMATI_RUNNING = simulated(State.RUNNING)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        # Manual intervention is preparation even while a program runs and the spindle turns.
        ({"Monitoring/MachineTool/OperationMode": 0}, ("SETUP", None)),  # Manual
        ({"Monitoring/MachineTool/OperationMode": 2}, ("SETUP", None)),  # Setup
        ({"Monitoring/MachineTool/OperationMode": 3}, ("SETUP", None)),  # AutoWithManualIntervention
        ({"Monitoring/MachineTool/OperationMode": 4}, ("SETUP", None)),  # Service
        ({"Monitoring/MachineTool/OperationMode": 5}, ("IDLE", None)),  # Other: never counted as production
        ({"Monitoring/MachineTool/MachineryItemState": 1}, ("FAULT", "out_of_service")),
        ({"Production/ActiveProgram/State": 4}, ("FAULT", "program_aborted")),
        ({"Monitoring/MachineTool/AlarmCode": 2301, "Monitoring/MachineTool/OperationMode": 0}, ("FAULT", "2301")),
        ({"Production/ActiveProgram/State": 3}, ("IDLE", None)),
    ],
)
def test_umati_modes_and_faults(rules: dict[str, StateRules], changes: dict[str, Any], expected: tuple) -> None:
    assert evaluate(rules["umati_machinetool"], "umati_machinetool", UMATI_RUNNING | changes) == expected


@pytest.mark.parametrize(
    ("op_mode", "prog_status", "expected"),
    [
        (0, 1, ("SETUP", None)),  # Manual (JOG, reference point)
        (1, 1, ("SETUP", None)),  # MDA
        (2, 1, ("RUNNING", None)),  # Automatic
        (7, 1, ("IDLE", None)),  # a value outside the enumeration is never production
        (2, 2, ("IDLE", None)),  # Waiting
        (2, 4, ("FAULT", "program_canceled")),
    ],
)
def test_cnc_40502_modes_and_faults(
    rules: dict[str, StateRules], op_mode: int, prog_status: int, expected: tuple
) -> None:
    values = UMATI_RUNNING | {
        "CncInterface/Channel1/ActOperationMode": op_mode,
        "CncInterface/Channel1/ActProgramStatus": prog_status,
    }
    assert evaluate(rules["cnc_40502"], "cnc_40502", values) == expected


def test_every_model_tag_reads_good_from_the_simulator() -> None:
    """The models' browse paths exist on the simulated CNC (both layouts are served by one server)."""

    async def scenario() -> dict[str, list[Sample]]:
        scenario = load_scenario()
        plant = build_plant(scenario, "baseline")["CNC-01"]
        clock = ScaledClock.starting_now(scenario.phases["baseline"].window.start, 60.0)
        server = CncServer(plant, clock, "127.0.0.1", free_port())
        await server.start()
        out = {}
        try:
            for model in MODELS:
                config = {"id": "c", "protocol": "opcua", "url": server.url, "timeout_s": 2.0}
                device = OpcUaDevice(
                    OpcUaDeviceConfig.model_validate(config | {"model": model, "machine_path": "Machines/CNC-01"})
                )
                try:
                    out[model] = await device.read(lambda: datetime.now(UTC))
                finally:
                    await device.close()
        finally:
            await server.stop()
        return out

    read = asyncio.run(scenario())
    for model, samples in read.items():
        assert [s.tag for s in samples] == list(MODELS[model].tags)
        assert [s.reason for s in samples if not s.good] == []
        values = {s.tag: s.value for s in samples}
        assert values["program"] == "O1001"  # the scenario's first program
        assert isinstance(values["parts"], int) and isinstance(values["alarm"], int)


def device_config(**fields: Any) -> dict[str, Any]:
    return {"id": "c", "protocol": "opcua", "url": "opc.tcp://127.0.0.1:4840/"} | fields


def test_user_tag_overrides_the_model_tag_of_the_same_name() -> None:
    config = OpcUaDeviceConfig.model_validate(
        device_config(
            model="umati_machinetool",
            machine_path="Machines/CNC-01",
            tags=[{"name": "alarm", "node": "ns=3;i=77"}, {"name": "power_kw", "path": "Energy/ActivePower"}],
        )
    )
    names = [t.name for t in config.tags]
    assert names == [*MODELS["umati_machinetool"].tags, "power_kw"]
    alarm = config.tags[names.index("alarm")]
    assert (alarm.node, alarm.path) == ("ns=3;i=77", None)
    assert config.tags[names.index("mode")].path == "Monitoring/MachineTool/OperationMode"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"model": "cnc_40502"}, "model cnc_40502 needs machine_path"),
        ({"tags": [{"name": "a", "node": "ns=2;i=1"}, {"name": "a", "path": "X/Y"}]}, "duplicate tag name 'a' in tags"),
        ({"tags": [{"name": "a", "node": "ns=2;i=1", "path": "X/Y"}]}, "give exactly one of node or path"),
        ({"tags": [{"name": "a"}]}, "give exactly one of node or path"),
        ({"tags": [{"name": "a", "path": "X//Y"}]}, "empty browse name in 'X//Y'"),
        ({"machine_path": "Machines/M1", "tags": [{"name": "a", "node": "ns=2;i=1"}]}, "machine_path is only used"),
        ({"model": "cnc_40502", "machine_path": "M", "keepalive_count": 20}, "lifetime_count must be at least 3 x"),
    ],
)
def test_config_errors_name_the_field(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as e:
        OpcUaDeviceConfig.model_validate(device_config(**fields))
    assert message in str(e.value)


def test_user_rule_set_wins_and_tag_check_still_applies(tmp_path: Path) -> None:
    own = AGENT + "state_rules:\n  cnc_40502:\n    - {state: RUNNING, when: {all: [{tag: op_mode, value: 2}]}}\n"
    path = tmp_path / "agent.yaml"
    path.write_text(own, encoding="utf-8")
    assert [r.state for r in load_config(path).state_rules["cnc_40502"]] == ["RUNNING"]

    # A machine using a model's rules on a device without the model's tags is refused, naming them.
    plain = AGENT.replace("model: cnc_40502, machine_path: Machines/M2", "tags: [{name: x, node: 'ns=2;i=1'}]")
    path.write_text(plain, encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert "machines[1].device: device 'd2' has no tag alarm, op_mode, prog_status" in str(e.value)
