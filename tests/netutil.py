"""Real processes on loopback for the tests: a Mosquitto that can be stopped and started again."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from edgeproof.netutil import free_port, free_port_block, wait_port

__all__ = ["Mosquitto", "free_port", "free_port_block", "wait_port"]


class Mosquitto:
    """A private Mosquitto on a free loopback port, in its own temp dir; stop() and start() again."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            raise RuntimeError("mosquitto is not installed (Debian package 'mosquitto'; .ci/run installs it)")
        self.binary = binary
        self.port = port or free_port()
        self.workdir = workdir
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(
            # persistence keeps subscribers' sessions and queued QoS 1 messages across a restart,
            # as a production broker does
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            f"persistence true\npersistence_location {workdir}/\nautosave_interval 1\n"
            f"log_dest file {workdir / 'mosquitto.log'}\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)], stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None
