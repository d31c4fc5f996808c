"""The agent over OPC UA: a CNC server killed and restarted mid-run shows as an UNKNOWN state, then data resumes."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from edge_agent.config import AgentConfig
from edge_agent.outbox import Outbox
from edge_agent.runtime import Agent
from edgeproof.clock import WallClock
from tests.netutil import free_port
from tests.test_opcua_connector import CncProcess, cnc  # noqa: F401  (the fixture)

WEEK = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _config(url: str, data_dir: Path) -> AgentConfig:
    return AgentConfig.model_validate(
        {
            "agent": {"id": "opcua-outage", "data_dir": str(data_dir)},
            "site": {"firm": {"name": "Test Co."}, "name": "test", "timezone": "UTC"},
            "processes": [{"id": "turning", "name": "Turning", "key": True}],
            "machines": [
                {
                    "id": "CNC-01",
                    "name": "lathe",
                    "type": "cnc_lathe",
                    "process": "turning",
                    "digital": True,
                    "nc_capable": True,
                    "ideal_cycle_s": 45.0,
                    "device": "cnc-01",
                    "state_rules": "umati_machinetool",  # the built-in rule set
                    "counters": {"parts": "parts", "scrap": "rejected"},
                }
            ],
            "devices": [
                {
                    "id": "cnc-01",
                    "protocol": "opcua",
                    "url": url,
                    "model": "umati_machinetool",
                    "machine_path": "Machines/CNC-01",
                    "publishing_interval_s": 0.1,
                    "keepalive_count": 5,
                    "lifetime_count": 15,
                    "backoff_max_s": 1.0,
                }
            ],
            "calendar": {"shifts": [{"days": list(WEEK), "start": "00:00", "end": "00:00"}]},  # always planned
            "mqtt": {"port": free_port()},  # nothing listens: the outbox keeps every message
        }
    )


async def _until_all_good(agent: Agent, device: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        latest = agent.latest[device]
        if latest and all(s.good for s in latest.values()):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{device} did not read good within {timeout_s} s: {agent.latest[device]}")


def test_server_restart_shows_as_unknown_then_data_resumes(cnc: CncProcess, tmp_path: Path) -> None:  # noqa: F811
    config = _config(cnc.url, tmp_path / "agent")
    agent = Agent(config, WallClock())

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop, drain_timeout_s=0.2))
        try:
            await _until_all_good(agent, "cnc-01")
            await asyncio.sleep(0.5)
            cnc.stop()
            await asyncio.sleep(2.0)
            cnc.start()  # the same port
            await _until_all_good(agent, "cnc-01")
            await asyncio.sleep(0.5)  # a few evaluation ticks after the data came back
        finally:
            stop.set()
            await task

    asyncio.run(scenario())
    box = Outbox(config.agent.data_dir / "outbox.sqlite")
    states = [json.loads(p) for _, t, p in box.pending(10_000) if t.endswith("/state")]
    box.close()
    sequence = [(s["state"], s["reason"]) for s in states]
    known = [i for i, (state, _) in enumerate(sequence) if state != "UNKNOWN"]
    assert known, f"the machine never left UNKNOWN: {sequence}"
    # after the first known state, the outage is one UNKNOWN interval naming why, and it was closed
    # (so the state changed again: data resumed by itself)
    outage = [(state, reason) for state, reason in sequence[known[0] :] if state == "UNKNOWN"]
    assert len(outage) == 1, sequence
    reason = outage[0][1]
    assert reason and reason != "no data yet", sequence
    gap = next(s for s in states[known[0] :] if s["state"] == "UNKNOWN")
    assert gap["end"] > gap["start"]
