"""Built-in machine-tool mappings: the tags a companion-spec machine exposes and the rules that turn them into states.

A device with `model: <name>` and `machine_path` gets the model's tags (browse paths relative to the machine
object); a machine with `state_rules: <name>` gets the rule set of the same name unless the configuration
defines its own. Rules are plain data in the agent's `state_rules` format, validated by edge_agent/config.py.

Enumeration values used (numbers as the servers report them):

OPC 40501-1 (umati MachineTool) MachineOperationMode (`mode`):
    0 Manual, 1 Automatic, 2 Setup, 3 AutoWithManualIntervention, 4 Service, 5 Other
OPC 40001-1 (Machinery) MachineryItemState (`item_state`):
    0 NotAvailable, 1 OutOfService, 2 NotExecuting, 3 Executing
OPC 40501-1 ProductionProgram state, ISA-95 job states (`program_state`):
    0 Initializing, 1 Running, 2 Ended, 3 Interrupted, 4 Aborted
OPC 40502 (CNC Systems) CncChannelProgStatus (`prog_status`):
    0 Stopped, 1 Running, 2 Waiting, 3 Interrupted, 4 Canceled (aborted by reset or alarm)
OPC 40502 CncOperationMode (`op_mode`):
    0 Manual (JOG, reference point and other hand modes included), 1 MDA, 2 Automatic

Neither specification has a warm-up or edit mode: controllers report warm-up as a manual/MDA activity
(SETUP here) or as an automatic program, and editing happens with the channel in Manual or MDA.
OPC 40502 reports alarms as events (CncAlarmType), not as a variable; `alarm` reads the machine's current
alarm code from Monitoring/MachineTool/AlarmCode as the simulator and OPC 40501 servers serve it. Paths
follow the simulator's layout (docs/simulators.md); for a controller that places a node elsewhere, a tag of
the same name in the device's `tags` replaces the model's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

ModelName = Literal["umati_machinetool", "cnc_40502"]

# OPC 40501 MachineOperationMode
MODE_MANUAL, MODE_AUTOMATIC, MODE_SETUP, MODE_AUTO_WITH_MANUAL_INTERVENTION, MODE_SERVICE = 0, 1, 2, 3, 4
# OPC 40001 MachineryItemState
ITEM_OUT_OF_SERVICE, ITEM_EXECUTING = 1, 3
# OPC 40501 ProductionProgram state
PROGRAM_RUNNING, PROGRAM_ABORTED = 1, 4
# OPC 40502 CncChannelProgStatus
CNC_PROG_RUNNING, CNC_PROG_CANCELED = 1, 4
# OPC 40502 CncOperationMode
CNC_MANUAL, CNC_MDA, CNC_AUTOMATIC = 0, 1, 2


@dataclass(frozen=True)
class MachineToolModel:
    tags: dict[str, str]  # tag name -> browse path relative to the machine object
    rules: list[dict[str, Any]]  # the built-in rule set of the same name


def _cond(tag: str, op: str, value: Any) -> dict[str, Any]:
    return {"tag": tag, "op": op, "value": value}


_ALARM_FAULT = {"state": "FAULT", "when": {"all": [_cond("alarm", "ne", 0)]}, "reason": "{alarm}"}

UMATI_MACHINETOOL = MachineToolModel(
    tags={
        "item_state": "Monitoring/MachineTool/MachineryItemState",
        "mode": "Monitoring/MachineTool/OperationMode",
        "alarm": "Monitoring/MachineTool/AlarmCode",
        "program_state": "Production/ActiveProgram/State",
        "program": "Production/ActiveProgram/Name",
        "spindle_rotating": "Monitoring/Spindle/IsRotating",
        "spindle_override": "Monitoring/Spindle/Override",
        "parts": "Production/PartsProduced",
        "rejected": "Production/PartsRejected",
    },
    rules=[
        _ALARM_FAULT,
        {
            "state": "FAULT",
            "when": {"all": [_cond("item_state", "eq", ITEM_OUT_OF_SERVICE)]},
            "reason": "out_of_service",
        },
        {
            "state": "FAULT",
            "when": {"all": [_cond("program_state", "eq", PROGRAM_ABORTED)]},
            "reason": "program_aborted",
        },
        # Manual intervention of any kind is preparation, not production, even with the spindle turning.
        {
            "state": "SETUP",
            "when": {
                "all": [
                    _cond("mode", "in", [MODE_MANUAL, MODE_SETUP, MODE_AUTO_WITH_MANUAL_INTERVENTION, MODE_SERVICE])
                ]
            },
        },
        {
            "state": "RUNNING",
            "when": {
                "all": [
                    _cond("mode", "eq", MODE_AUTOMATIC),
                    _cond("item_state", "eq", ITEM_EXECUTING),
                    _cond("program_state", "eq", PROGRAM_RUNNING),
                ]
            },
        },
        {"state": "IDLE"},
    ],
)

CNC_40502 = MachineToolModel(
    tags={
        "prog_status": "CncInterface/Channel1/ActProgramStatus",
        "op_mode": "CncInterface/Channel1/ActOperationMode",
        "program": "CncInterface/Channel1/ActMainProgramName",
        "feed_override": "CncInterface/Channel1/FeedOverride",
        "spindle_override": "CncInterface/Spindle1/ActOverride",
        "alarm": "Monitoring/MachineTool/AlarmCode",
        "parts": "Production/PartsProduced",
        "rejected": "Production/PartsRejected",
    },
    rules=[
        _ALARM_FAULT,
        {
            "state": "FAULT",
            "when": {"all": [_cond("prog_status", "eq", CNC_PROG_CANCELED)]},
            "reason": "program_canceled",
        },
        {"state": "SETUP", "when": {"all": [_cond("op_mode", "in", [CNC_MANUAL, CNC_MDA])]}},
        {
            "state": "RUNNING",
            "when": {
                "all": [
                    _cond("prog_status", "eq", CNC_PROG_RUNNING),
                    _cond("op_mode", "eq", CNC_AUTOMATIC),
                ]
            },
        },
        {"state": "IDLE"},
    ],
)

MODELS: dict[str, MachineToolModel] = {"umati_machinetool": UMATI_MACHINETOOL, "cnc_40502": CNC_40502}
