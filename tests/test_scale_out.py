"""Scale-out: several ingest worker processes on one MQTT shared subscription and one SQLite store.

Real Mosquitto (2.0, on a free port, persistence on, unlimited session queues as docs/architecture.md
asks), real workers (`python -m edgeproof.cli ingest --share-group G --client-id ...`), a paho
publisher sending the contract's KPI messages for several unsigned agents. What these tests pin is
Mosquitto's behaviour (docs/scale-out.md): it deals the messages round-robin over the group's
sessions, connected or not, so a SIGKILLed worker's in-flight messages and its share of everything
published while it is away wait in its persistent session until its client id connects again; the
surviving workers do not take them over. Nothing is lost, nothing is stored twice.
"""

from __future__ import annotations

import ast
import multiprocessing
import multiprocessing.synchronize
import re
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cloud_ingest.consumer import DEFAULT_CLIENT_ID, ingest_subscription
from cloud_ingest.store import Store
from edgeproof.cli import main as edgeproof_main
from edgeproof.contract import INGEST_SUBSCRIPTION
from tests.netutil import Mosquitto
from tests.test_fault_injection import ChildProcess, wait_for
from tests.test_ingest_store import T0, kpi, wire

pytestmark = pytest.mark.integration

GROUP = "ingest"
AGENTS = ("plant-a", "plant-b", "plant-c", "plant-d")
PER_AGENT = 150
N = len(AGENTS) * PER_AGENT  # 600: each half (300) splits evenly over three workers
WORKERS = 3
SEQ = re.compile(rb'"seq":(\d+)')
MAX_INFLIGHT = 20  # Mosquitto's max_inflight_messages default: what a killed worker can hold unacknowledged


def workload() -> list[tuple[str, bytes]]:
    """N KPI messages (one machine's hourly bucket each), the agents interleaved as live plants are."""
    return [
        wire(kpi(seq, machine=f"M{seq % 5}", start=T0 + timedelta(hours=seq // 5), agent=agent))
        for seq in range(1, PER_AGENT + 1)
        for agent in AGENTS
    ]


def seq_of(payload: bytes) -> int:
    found = SEQ.search(payload)
    assert found is not None
    return int(found.group(1))


def stored_total(db: Path) -> int:
    if not db.exists():
        return 0
    with Store(db) as store:
        return sum(store.message_count(a) for a in AGENTS)


class Worker(ChildProcess):
    """One `edgeproof ingest` worker of the share group, on its own stable client id and the common store."""

    def __init__(self, work: Path, db: Path | str, port: int, number: int) -> None:
        self.client_id = f"{DEFAULT_CLIENT_ID}-{number}"
        super().__init__(work, self.client_id)
        self.args = ["-m", "edgeproof.cli", "ingest", "--db", str(db), "--mqtt-host", "127.0.0.1"]
        self.args += ["--mqtt-port", str(port), "--client-id", self.client_id, "--share-group", GROUP]

    def start(self) -> None:
        log = self._launch(self.args)
        wanted = f"subscribed topic=$share/{GROUP}/{INGEST_SUBSCRIPTION}"
        wait_for(f"{self.client_id}'s subscription", lambda: wanted in log.read_text(encoding="utf-8"))

    def counts(self) -> list[Counter[str]]:
        """What each cleanly stopped run of this worker reported (a SIGKILLed run reports nothing)."""
        runs = []
        for path in self.logs:
            found = re.search(r"ingest stopped client_id=\S+ counts=(\{.*\})", path.read_text(encoding="utf-8"))
            if found:
                runs.append(Counter(ast.literal_eval(found.group(1))))
        return runs


class Publisher:
    """A QoS 1 publisher that waits for every PUBACK, as the agent's outbox does before deleting a row."""

    def __init__(self, port: int) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="scale-out-publisher")
        self.client.max_inflight_messages_set(100)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def send(self, messages: list[tuple[str, bytes]]) -> None:
        infos = [self.client.publish(name, payload, qos=1) for name, payload in messages]
        for info in infos:
            info.wait_for_publish(timeout=30)
            assert info.is_published()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    (tmp_path / "broker").mkdir()
    b = Mosquitto(tmp_path / "broker", extra_conf="max_queued_messages 0\n")
    b.start()
    yield b
    b.stop()


@pytest.fixture
def workers(tmp_path: Path, broker: Mosquitto) -> Iterator[list[Worker]]:
    db = tmp_path / "ingest.sqlite"
    group = [Worker(tmp_path, db, broker.port, i) for i in range(1, WORKERS + 1)]
    try:
        for w in group:
            w.start()
        yield group
    finally:
        for w in group:
            if w.proc is not None and w.proc.poll() is None:
                w.proc.kill()
                w.proc.wait()


@pytest.fixture
def publisher(broker: Mosquitto) -> Iterator[Publisher]:
    p = Publisher(broker.port)
    yield p
    p.close()


def assert_each_message_stored_once(db: Path | str) -> None:
    with Store(db) as store:
        for agent in AGENTS:
            assert store.sequence_numbers(agent) == list(range(1, PER_AGENT + 1)), agent
            report = store.gap_report(agent)
            assert (report.gaps, report.missing, report.received) == ([], 0, PER_AGENT), agent
        assert store.dead_letters() == []


def test_a_worker_killed_mid_run_and_restarted_loses_nothing_and_stores_nothing_twice(
    tmp_path: Path, workers: list[Worker], publisher: Publisher
) -> None:
    db = tmp_path / "ingest.sqlite"
    messages = workload()
    first, second = messages[: N // 2], messages[N // 2 :]
    w1, w2, w3 = workers

    publisher.send(first)
    wait_for("a first part stored", lambda: stored_total(db) >= N // 8)
    w2.kill()  # mid-run: it holds unacknowledged messages, stored or not
    publisher.send(second)  # a third of these is dealt to w2's session while it is away
    wait_for("the survivors' share stored", lambda: stored_total(db) >= N // 2)
    w2.start()  # same client id: its session, with everything dealt to it, comes back
    wait_for("every message stored", lambda: stored_total(db) == N)
    for w in workers:
        assert w.stop() == 0

    assert_each_message_stored_once(db)
    (c1,), (c3,) = w1.counts(), w3.counts()
    (restarted,) = w2.counts()
    # Round-robin over the three sessions, connected or not: each survivor got exactly a third of each
    # half and stored it; nothing of w2's share was handed to them.
    assert (c1["stored"], c3["stored"]) == (N // 3, N // 3)
    assert c1["duplicate"] == c3["duplicate"] == 0
    # w2's runs stored the last third between them; a redelivered message its killed run had
    # committed but not acknowledged is counted as a duplicate, not stored again.
    assert restarted["stored"] >= N // 2 // 3  # at least its share of the second half, dealt while it was dead
    assert restarted["stored"] + restarted["duplicate"] <= N // 3
    with Store(db) as store:
        assert store.duplicate_count == restarted["duplicate"] <= MAX_INFLIGHT


def test_a_killed_worker_that_is_not_restarted_parks_its_share_until_its_client_id_returns(
    tmp_path: Path, workers: list[Worker], publisher: Publisher
) -> None:
    db = tmp_path / "ingest.sqlite"
    messages = workload()
    first, second = messages[: N // 2], messages[N // 2 :]
    w1, w2, w3 = workers

    publisher.send(first)
    wait_for("the first half stored", lambda: stored_total(db) == N // 2)
    w2.kill()
    publisher.send(second)
    wait_for("the survivors' two thirds of the second half", lambda: stored_total(db) == N // 2 + N // 3)

    # Mosquitto keeps dealing every third message to the dead worker's session: those are missing,
    # without an eviction declaration, until that client id connects again.
    with Store(db) as store:
        stored = {(a, s) for a in AGENTS for s in store.sequence_numbers(a)}
        reports = [store.gap_report(a) for a in AGENTS]
    missing = {(a, s) for a in AGENTS for s in range(1, PER_AGENT + 1)} - stored
    assert len(missing) == N // 2 // WORKERS
    assert all(g.declared_by is None for r in reports for g in r.gaps)
    dealt = [(name.split("/")[2], seq_of(payload)) for name, payload in second]
    assert any(missing == set(dealt[k::WORKERS]) for k in range(WORKERS)), "not every third message"

    # The slot comes back (on this host or another: only the client id matters) and drains its session.
    w2.start()
    wait_for("every message stored", lambda: stored_total(db) == N)
    for w in workers:
        assert w.stop() == 0

    assert_each_message_stored_once(db)
    (c1,), (c3,), (returned,) = w1.counts(), w3.counts(), w2.counts()
    assert (c1["stored"], c3["stored"], returned["stored"]) == (N // 3, N // 3, N // 2 // WORKERS)
    assert c1["duplicate"] == c3["duplicate"] == returned["duplicate"] == 0
    with Store(db) as store:
        assert store.duplicate_count == 0


# --- several processes writing one SQLite store --------------------------------------------------


def _ingest_all(
    db: str,
    messages: list[tuple[str, bytes]],
    start: multiprocessing.synchronize.Barrier,
    results: multiprocessing.Queue[dict[str, int]],
) -> None:
    start.wait()  # open the fresh file and write at the same moment as the others
    with Store(db) as store:
        results.put(dict(Counter(store.ingest(name, payload) for name, payload in messages)))


def test_processes_racing_on_the_same_messages_store_each_once_and_count_the_rest_as_duplicates(
    store_target: Path | str,
) -> None:
    db = store_target
    messages = workload()[:300]
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Barrier(WORKERS), ctx.Queue()
    # the processes also open a new store together: one creates the schema, the others wait and find it
    procs = [ctx.Process(target=_ingest_all, args=(str(db), messages, start, results)) for _ in range(WORKERS)]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0
    # each process saw every message: exactly one of them stored it, the others found it stored
    assert sum((Counter(o) for o in outcomes), Counter()) == Counter(stored=300, duplicate=300 * (WORKERS - 1))
    with Store(db) as store:
        assert sum(store.message_count(a) for a in AGENTS) == 300
        assert store.duplicate_count == 300 * (WORKERS - 1)
        assert store.dead_letters() == []


# --- the command line -----------------------------------------------------------------------------


def test_the_shared_subscription_is_the_contracts_under_the_group() -> None:
    assert ingest_subscription(None, DEFAULT_CLIENT_ID) == INGEST_SUBSCRIPTION
    assert ingest_subscription("city", "edgeproof-ingest-1") == "$share/city/edgeproof/v1/+/+"
    for bad in ("", "a/b", "a+", "#"):
        with pytest.raises(ValueError, match="share group"):
            ingest_subscription(bad, "edgeproof-ingest-1")


def test_a_share_group_worker_on_the_default_client_id_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "ingest.sqlite"
    assert edgeproof_main(["ingest", "--db", str(db), "--share-group", GROUP]) == 2
    assert "needs its own stable client id" in capsys.readouterr().err
    assert not db.exists()
