"""Helpers the benchmarks share: a private MQTT broker and the CPU time of helper processes."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

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
