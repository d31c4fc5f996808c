"""Real processes on loopback for the tests: a Mosquitto that can be stopped and started again."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from edgeproof.netutil import free_port, free_port_block, wait_port

__all__ = ["Mosquitto", "MosquittoTls", "free_port", "free_port_block", "start_simulator", "wait_port"]


@dataclass(frozen=True)
class MosquittoTls:
    """PEM files for a TLS listener; `require_certificate` makes it mutual TLS."""

    cafile: Path
    certfile: Path
    keyfile: Path
    require_certificate: bool = False


class Mosquitto:
    """A private Mosquitto on a free loopback port, in its own temp dir; stop() and start() again."""

    def __init__(
        self, workdir: Path, port: int | None = None, tls: MosquittoTls | None = None, extra_conf: str = ""
    ) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            raise RuntimeError("mosquitto is not installed (Debian package 'mosquitto'; .ci/run installs it)")
        self.binary = binary
        self.port = port or free_port()
        self.workdir = workdir
        self.conf = workdir / "mosquitto.conf"
        listener = f"listener {self.port} 127.0.0.1\n"
        if os.geteuid() == 0:
            # as root Mosquitto would switch to the 'mosquitto' user, which cannot read the test's
            # private temp dirs: certificates, persistence and log
            listener = "user root\n" + listener
        if tls is not None:
            listener += (
                f"cafile {tls.cafile}\ncertfile {tls.certfile}\nkeyfile {tls.keyfile}\n"
                f"require_certificate {'true' if tls.require_certificate else 'false'}\n"
            )
        self.conf.write_text(
            # persistence keeps subscribers' sessions and queued QoS 1 messages across a restart,
            # as a production broker does
            f"{listener}allow_anonymous true\n"
            f"persistence true\npersistence_location {workdir}/\nautosave_interval 1\n"
            f"log_dest file {workdir / 'mosquitto.log'}\n{extra_conf}"
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


def start_simulator(phase: str, port_base: int, speed: float = 60.0) -> subprocess.Popen[str]:
    """`python -m simulators` for one phase of the demo plant; returns once every server answers."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulators", "--phase", phase, "--port-base", str(port_base), "--speed", str(speed)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    ready = proc.stdout.readline() if proc.stdout else ""
    if not ready.startswith('{"ready": true'):
        proc.kill()
        raise RuntimeError(f"simulator for phase {phase} did not start")
    return proc
