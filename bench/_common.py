"""Helpers the benchmarks share: a private MQTT broker, the CPU time of helper processes, the agent's configuration."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from edgeproof.netutil import free_port, wait_port


class Broker:
    """A private Mosquitto on a free port if one is installed; otherwise a port where nothing listens."""

    def __init__(self, workdir: Path, mode: str) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.kind = "none (nothing listens; the outbox keeps the messages)"
        if mode == "auto" and Path(binary).exists():
            conf = workdir / "mosquitto.conf"
            conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest none\n")
            self.proc = subprocess.Popen(
                [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            wait_port(self.port)
            self.kind = f"mosquitto ({binary})"

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def process_cpu_s(pids: list[int]) -> float | None:
    """User + system CPU seconds of these processes so far, from /proc; None if one is gone."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        fields = stat[stat.rindex(")") + 2 :].split()
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def bench_agent_config(
    data_dir: Path,
    mqtt_port: int,
    machines: list[dict[str, Any]],
    devices: list[dict[str, Any]],
    rules: list[Any],
    extra: dict[str, Any] | None = None,
) -> Any:
    """An agent configuration around the benchmark's machines: one process, rule set "bench", always in shift.

    `extra`: further top-level sections (e.g. `{"kpi": {"bucket_minutes": 1}}`), replacing the defaults.
    """
    from edge_agent.config import AgentConfig

    return AgentConfig.model_validate(
        {
            "agent": {"id": "bench-agent", "data_dir": str(data_dir)},
            "site": {"firm": {"name": "Benchmark Co."}, "name": "bench", "timezone": "UTC"},
            "processes": [{"id": "bench", "name": "bench", "key": True}],
            "machines": machines,
            "devices": devices,
            "state_rules": {"bench": rules},
            "calendar": {
                "shifts": [
                    {
                        "name": "all day",
                        "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                        "start": "00:00",
                        "end": "00:00",
                    }
                ]
            },
            "mqtt": {"host": "127.0.0.1", "port": mqtt_port},
        }
        | (extra or {})
    )


def rss_kb(pid: int | str = "self") -> int | None:
    """Resident set size (VmRSS) of a process in KiB, from /proc; None if it is gone or has none."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None
