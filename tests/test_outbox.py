"""The durable outbox: sequence numbers survive restarts; rows leave only when acknowledged."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge_agent.outbox import Outbox
from edgeproof.contract import StatusMessage


def _message(seq: int) -> StatusMessage:
    return StatusMessage(agent_id="a", boot_id=f"b{seq}", online=True, at=datetime(2026, 1, 1, tzinfo=UTC))


def test_sequence_continues_after_reopen_and_ack_removes(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    box = Outbox(path)
    assert [box.append("t", _message) for _ in range(3)] == [1, 2, 3]
    box.acknowledge([1])
    box.close()
    box = Outbox(path)
    assert box.append("t", _message) == 4
    assert [seq for seq, _, _ in box.pending(10)] == [2, 3, 4]
    assert [seq for seq, _, _ in box.pending(2, exclude=[2])] == [3, 4]
    assert box.depth() == 3 and box.last_seq() == 4
    payload = box.pending(1)[0][2]
    assert b'"boot_id":"b2"' in payload


def test_messages_survive_kill_minus_9(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    script = (
        "import os, signal\n"
        "from pathlib import Path\n"
        "from edge_agent.outbox import Outbox\n"
        "from tests.test_outbox import _message\n"
        f"box = Outbox(Path({str(path)!r}))\n"
        "for _ in range(50): box.append('t', _message)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parent.parent)
    assert proc.returncode == -9
    box = Outbox(path)
    assert box.depth() == 50 and box.last_seq() == 50


def test_append_all_is_one_transaction(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.sqlite")
    assert box.append_all([("t", _message), ("u", _message)]) == [1, 2]

    def broken(seq: int) -> StatusMessage:
        raise ValueError("cannot build")

    with pytest.raises(ValueError, match="cannot build"):
        box.append_all([("t", _message), ("t", broken)])
    # the failed batch left nothing behind, not even its first message or a used sequence number
    assert box.depth() == 2 and box.last_seq() == 2
    assert box.append("t", _message) == 3
    assert [(seq, topic) for seq, topic, _ in box.pending(10)] == [(1, "t"), (2, "u"), (3, "t")]
