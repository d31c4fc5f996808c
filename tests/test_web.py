"""The evaluator's web app over a real store: uvicorn on a loopback port, hit with httpx.

The store is the hand-checked, signed scenario of test_bundle (seq 7 held pending a key, seq 8
declared evicted) plus a dead letter of the agent, its retained offline status and a second project
whose agent never sent anything, so that every status of the firm list shows up.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import signal
import sqlite3
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest

from cloud_ingest.dialect import StoreTarget, is_postgres
from cloud_ingest.evidence import EvidenceReport
from cloud_ingest.projects import ProjectStore
from cloud_ingest.record import build_project_reports, read_csv
from cloud_ingest.store import GapReport, Store
from cloud_ingest.users import PASSWORD_ENV, UserStore, check_password, hash_password, read_users
from cloud_ingest.verify import verify_bundle
from cloud_ingest.web.app import create_app
from cloud_ingest.web.server import WebServer
from edgeproof.cli import main
from edgeproof.contract import StatusMessage, encode, topic
from edgeproof.netutil import free_port, wait_port
from tests.conftest import fresh_postgres_database
from tests.netutil import Mosquitto
from tests.test_bundle import PROJECT, signed_store
from tests.test_report_evidence import AGENT
from tests.test_signing import Key

REPO = Path(__file__).resolve().parents[1]
USER, PASSWORD = "pingshen", "correct horse battery staple"
EMPTY_PROJECT, EMPTY_AGENT = "wx-2024-002", "wuxi-line-1"


def seed_web_store(tmp_path: Path, target: StoreTarget | None = None) -> StoreTarget:
    db: StoreTarget = signed_store(tmp_path, Key(), target)
    with Store(db) as store:
        assert store.ingest(topic(AGENT, "kpi"), b"{not json", None) == "dead_letter"
        status = StatusMessage(agent_id=AGENT, boot_id="boot", online=False)
        assert store.ingest(topic(AGENT, "status"), encode(status)) == "status"
    with ProjectStore(db) as projects:
        first = projects.get(PROJECT)
        firm = first.firm.model_copy(update={"name": "无锡某某铸造有限公司"})
        projects.put(first.model_copy(update={"id": EMPTY_PROJECT, "firm": firm, "agents": [EMPTY_AGENT]}))
    with UserStore(db) as users:
        users.add(USER, PASSWORD)
    return db


def digest(db: StoreTarget) -> tuple[str, str]:
    """The store file's bytes and its logical content (read-only), to show that nothing wrote to it;
    on PostgreSQL every table's rows, and the highest transaction id (any write moves it)."""
    if is_postgres(db):
        with psycopg.connect(str(db)) as pg:
            tables = pg.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() ORDER BY 1"
            ).fetchall()
            rows = [pg.execute(f"SELECT t::text FROM {name} t ORDER BY 1").fetchall() for (name,) in tables]
            xmax = pg.execute("SELECT pg_snapshot_xmax(pg_current_snapshot())::text").fetchone()
        return str(xmax), hashlib.sha256(repr(rows).encode()).hexdigest()
    db = Path(db)
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        content = "\n".join(conn.iterdump())
    finally:
        conn.close()
    return hashlib.sha256(db.read_bytes()).hexdigest(), hashlib.sha256(content.encode()).hexdigest()


@dataclass
class Served:
    url: str
    db: StoreTarget
    records: list[EvidenceReport]
    gaps: GapReport
    before: tuple[str, str]

    def client(self, auth: bool = True) -> httpx.Client:
        return httpx.Client(base_url=self.url, auth=(USER, PASSWORD) if auth else None, timeout=60)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def store_location(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreTarget]:
    """The served store: a SQLite file, then a PostgreSQL database (one per module: seeding takes a while)."""
    if request.param == "sqlite":
        yield tmp_path_factory.mktemp("web") / "ingest.sqlite"
        return
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, store_location: StoreTarget) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("web")
    db = seed_web_store(tmp, store_location)
    with Store(db) as store, ProjectStore(db) as projects:
        records = build_project_reports(store, projects.get(PROJECT))
        gaps = store.gap_report(AGENT)
    before = digest(db)
    port = free_port()
    server = WebServer(db, "127.0.0.1", port, auth=True).start()
    wait_port(port)
    yield Served(f"http://127.0.0.1:{port}", db, records, gaps, before)
    server.stop()


def attrs(html: str, tag: str, **match: str) -> list[dict[str, str]]:
    """The attributes of every <tag …> whose attributes include `match` (data_x → data-x)."""
    out = []
    for m in re.finditer(rf"<{tag}\b([^>]*)>", html):
        found = dict(re.findall(r'([\w-]+)="([^"]*)"', m.group(1)))
        if all(found.get(k.replace("_", "-")) == v for k, v in match.items()):
            out.append(found)
    return out


def value(report: EvidenceReport, key: str, window: str) -> float | None:
    v: float | None = getattr(report.indicator(key), window).value
    return v


# -- the firm list --------------------------------------------------------------------------------


def test_firm_list_shows_the_records_numbers_freshness_and_status(served: Served) -> None:
    [record] = served.records
    with served.client() as c:
        r = c.get("/")
    assert r.status_code == 200
    html = r.text
    assert '<html lang="zh-CN">' in html and "设备联网率" in html and "苏州示范精密机械有限公司" in html
    for key in ("networking_rate", "nc_rate_key_processes", "oee"):
        [cell] = attrs(html, "div", data_agent=AGENT, data_indicator=key)
        assert float(cell["data-baseline"]) == value(record, key, "baseline")
        assert float(cell["data-post"]) == value(record, key, "post")
    assert value(record, "networking_rate", "baseline") == 0.25 and value(record, "networking_rate", "post") == 0.75
    assert "25.0% → 75.0%" in html
    # the dead letter is a rejected message, the retained status says offline, seq 7-8 are gaps
    [row] = attrs(html, "tr", data_project=PROJECT)
    assert row["data-status"] == "rejected"
    shown = re.search(rf'<tr data-project="{PROJECT}".*?</tr>', html, re.S)
    assert shown is not None
    statuses = re.findall(r'<span class="tag st-\w+" data-status="(\w+)">([^<]+)</span>', shown.group(0))
    assert statuses == [("rejected", "有被拒消息"), ("offline", "采集端离线"), ("gaps", "有序号缺口")]
    [online] = attrs(shown.group(0), "div", data_agent=AGENT, data_online="false")
    assert online
    # freshness: the newest stored message (seq 20) arrived at RECEIVED, long before now
    ages = [a for a in attrs(html, "div", data_agent=AGENT) if "data-age-s" in a]
    assert len(ages) == 1 and float(ages[0]["data-age-s"]) > 86400 * 365
    [empty] = attrs(html, "tr", data_project=EMPTY_PROJECT)
    assert empty["data-status"] == "insufficient"
    assert "数据不足" in html


def test_firm_list_sorts_and_pages(served: Served) -> None:
    with served.client() as c:
        by_firm = c.get("/api/v1/projects", params={"sort": "firm"}).json()
        by_rate = c.get("/api/v1/projects", params={"sort": "networking_rate", "order": "desc"}).json()
        page2 = c.get("/", params={"sort": "firm", "per_page": 1, "page": 2}).text
        bad = c.get("/api/v1/projects", params={"sort": "nonsense"})
    assert [s["project_id"] for s in by_firm["items"]] == [EMPTY_PROJECT, PROJECT]  # 无 (wú) sorts before 苏 (sū)
    # a project without a value is last in either order
    assert [s["project_id"] for s in by_rate["items"]] == [PROJECT, EMPTY_PROJECT]
    assert by_rate["total"] == 2 and by_rate["pages"] == 1
    assert [r["data-project"] for r in attrs(page2, "tr") if "data-project" in r] == [PROJECT]
    assert "第 2 / 2 页，共 2 家" in page2 and 'id="prev"' in page2 and 'id="next"' not in page2
    assert bad.status_code == 422


# -- a project page ---------------------------------------------------------------------------------


def test_project_page_tables_and_charts_carry_the_records_numbers(served: Served) -> None:
    [record] = served.records
    with served.client() as c:
        html = c.get(f"/projects/{PROJECT}").text
    for i in record.indicators:  # the indicator table is the record's
        [row] = attrs(html, "tr", data_key=i.key)
        assert row["data-baseline"] == ("" if i.baseline.value is None else str(i.baseline.value))
        assert row["data-post"] == ("" if i.post.value is None else str(i.post.value))
    # the firm's declared baseline (tests/test_bundle.py: networking rate 10 %, OEE 55 %), shown apart
    [imported] = attrs(html, "div", data_imported_baseline="0.1")
    assert imported["class"] == "muted small imported"
    assert [r["data-value"] for r in attrs(html, "tr", data_window="baseline", data_indicator="oee")] == ["0.55"]
    assert "张工 设备科" in html and "企业申报导入的数值（非实测）" in html
    # daily series: the windows are the only days with buckets, so each day's numbers are the window's
    for day, window in (("2024-03-01", "baseline"), ("2024-06-01", "post")):
        for key in ("networking_rate", "oee"):
            [point] = attrs(html, "circle", data_series=key, data_day=day)
            assert float(point["data-value"]) == value(record, key, window)
    [net] = attrs(html, "circle", data_series="networking_rate", data_day="2024-06-01")
    assert (net["data-numerator"], net["data-denominator"]) == ("3", "4")
    assert re.search(r'data-series="oee" data-day="2024-03-01">62\.1%</text>', html)
    # per-machine OEE with A / P / Q, before and after
    for m in record.machines:
        for window in ("baseline", "post"):
            for metric in ("availability", "performance", "quality", "oee"):
                [bar] = attrs(html, "rect", data_machine=m.machine_id, data_metric=metric, data_window=window)
                expected = getattr(getattr(m, window), metric).value
                assert bar["data-value"] == ("" if expected is None else repr(expected))
    [m1] = attrs(html, "rect", data_machine="M1", data_metric="oee", data_window="post")
    assert float(m1["data-value"]) == 5400 / 6600  # Σ PRU·GQ ÷ PBT (7200 − 600 s of break)
    # the state timeline: M2's FAULT of 10 minutes in the baseline, with its colour and legend
    [fault] = attrs(html, "rect", data_state="FAULT")
    assert (fault["data-machine"], fault["data-seconds"], fault["data-window"], fault["fill"]) == (
        "M2",
        "600",
        "baseline",
        "#cf222e",
    )
    assert "故障" in html and "运行" in html  # legend
    # coverage: M2 had good data for a quarter of the baseline
    [cov] = attrs(html, "rect", data_machine="M2", data_window="baseline", data_value="0.25")
    assert cov["data-observed-s"] == "1800.0"
    # sequence gaps as Store.gap_report has them
    segments = [(g.first, g.last, g.status) for g in served.gaps.gaps]
    assert segments == [(7, 7, "pending"), (8, 8, "evicted")]
    for first, last, status in segments:
        [rect] = attrs(html, "rect", data_first=str(first), data_status=status)
        assert rect["data-last"] == str(last)
    # the agent without data is named, not hidden
    with served.client() as c:
        empty = c.get(f"/projects/{EMPTY_PROJECT}").text
    assert "尚无该采集端的数据" in empty and EMPTY_AGENT in empty
    assert "<script" not in html.lower() and "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_lang_switch_is_remembered_in_a_cookie(served: Served) -> None:
    with served.client() as c:
        en = c.get("/", params={"lang": "en"})
        assert en.cookies.get("edgeproof_lang") == "en"
        again = c.get(f"/projects/{PROJECT}")  # the cookie, no parameter
        back = c.get("/", params={"lang": "zh-CN"})
    assert '<html lang="en">' in en.text and "Networking rate" in en.text and "Rejected messages" in en.text
    assert '<html lang="en">' in again.text and "Machine state timeline" in again.text and "Fault" in again.text
    assert '<html lang="zh-CN">' in back.text and "设备联网率" in back.text


# -- the API --------------------------------------------------------------------------------------


def test_api_records_equal_build_project_reports(served: Served) -> None:
    with served.client() as c:
        records = c.get(f"/api/v1/projects/{PROJECT}/records").json()
        detail = c.get(f"/api/v1/projects/{PROJECT}").json()
        gaps = c.get(f"/api/v1/projects/{PROJECT}/agents/{AGENT}/gaps").json()
        states = c.get(f"/api/v1/projects/{PROJECT}/agents/{AGENT}/states", params={"window": "baseline"}).json()
        series = c.get(f"/api/v1/projects/{PROJECT}/agents/{AGENT}/series").json()
        unknown = c.get("/api/v1/projects/nope/records")
        stranger = c.get(f"/api/v1/projects/{PROJECT}/agents/{EMPTY_AGENT}/gaps")
    [expected] = served.records
    got = [EvidenceReport.model_validate(r) for r in records]
    assert len(got) == 1
    assert got[0].model_dump(exclude={"generated_at"}) == expected.model_dump(exclude={"generated_at"})
    assert detail["summary"]["agents"][0]["networking_rate"] == {"baseline": 0.25, "post": 0.75}
    assert detail["summary"]["statuses"] == ["rejected", "offline", "gaps"]
    assert GapReport.model_validate(gaps) == served.gaps
    assert [(s["seq"], s["machine_id"], s["state"], s["reason"]) for s in states] == [(6, "M2", "FAULT", "E-STOP")]
    assert [d["day"] for d in series["days"]] == ["2024-03-01", "2024-06-01"]
    assert series["days"][0]["oee"] == value(expected, "oee", "baseline")
    assert series["days"][1]["networking_rate"] == value(expected, "networking_rate", "post")
    assert series["overlapping_buckets"] == 1  # M1's daily roll-up (seq 10) next to its hourly buckets
    assert series["superseded_buckets"] == 1  # M2's re-sent bucket (seq 11)
    assert unknown.status_code == 404 and "no project 'nope'" in unknown.json()["detail"]
    assert stranger.status_code == 404


def test_docs_lists_every_api_route_without_external_assets(served: Served) -> None:
    with served.client() as c:
        docs = c.get("/docs")
        spec = c.get("/openapi.json").json()
    assert docs.status_code == 200
    for path in spec["paths"]:
        assert f"<code>{path}</code>" in docs.text
        assert list(spec["paths"][path]) == ["get"]
    assert "/api/v1/projects/{project_id}/records" in spec["paths"]
    assert "cdn" not in docs.text.lower() and "<script" not in docs.text.lower()
    assert "script-src" not in docs.headers["content-security-policy"]
    assert docs.headers["content-security-policy"].startswith("default-src 'none'")


# -- exports ----------------------------------------------------------------------------------------


def test_exports_pdf_csv_html_json_and_a_bundle_that_verifies(served: Served, tmp_path: Path) -> None:
    [record] = served.records
    base = f"/projects/{PROJECT}/agents/{AGENT}/export"
    with served.client() as c:
        pdf = c.get(f"{base}/evidence.zh-CN.pdf")
        csv_zip = c.get(f"{base}/evidence.csv.zip")
        html_en = c.get(f"{base}/evidence.en.html")
        html_zh = c.get(f"{base}/evidence.zh-CN.html")
        as_json = c.get(f"{base}/evidence.json")
        bundle = c.get(f"/projects/{PROJECT}/export/bundle.zip")
        bad = c.get(f"{base}/evidence.exe")
        no_data = c.get(f"/projects/{EMPTY_PROJECT}/export/bundle.zip")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF-")
    assert pdf.headers["content-disposition"] == f"attachment; filename*=UTF-8''{PROJECT}-{AGENT}-evidence.zh-CN.pdf"
    with zipfile.ZipFile(io.BytesIO(csv_zip.content)) as z:
        assert sorted(z.namelist()) == sorted(
            f"evidence.{n}.csv" for n in ("project", "indicators", "machines", "lines", "months", "imported")
        )
        z.extractall(tmp_path / "csv")
    rows = {r["key"]: r for r in read_csv(tmp_path / "csv" / "evidence.indicators.csv")}
    assert float(rows["networking_rate"]["post_value"]) == value(record, "networking_rate", "post")
    assert float(rows["oee"]["baseline_value"]) == value(record, "oee", "baseline")
    assert "Networking rate of production equipment" in html_en.text and "设备联网率" in html_zh.text
    exported = EvidenceReport.model_validate_json(as_json.content)
    assert exported.model_dump(exclude={"generated_at"}) == record.model_dump(exclude={"generated_at"})
    path = tmp_path / "bundle.zip"
    path.write_bytes(bundle.content)
    result = verify_bundle(path)
    assert result.passed, [c.summary for c in result.checks]
    assert result.check("signatures").summary == "18 of 18 messages verified"
    assert bad.status_code == 404
    assert no_data.status_code == 409 and EMPTY_AGENT in no_data.json()["detail"]


# -- read-only, accounts ------------------------------------------------------------------------------


def test_every_route_refuses_writes_and_the_store_is_unchanged(served: Served) -> None:
    app = create_app(served.db)  # the same routes as the server's
    values = {"project_id": PROJECT, "agent_id": AGENT, "filename": "evidence.json"}
    paths = sorted({r.path.format(**values) for r in app.routes if hasattr(r, "methods")})  # type: ignore[attr-defined]
    assert len(paths) >= 11 and "/" in paths and "/openapi.json" in paths and "/docs" in paths
    with served.client() as c:
        for path in paths:
            assert c.get(path).status_code == 200, path
            for method in ("POST", "PUT", "PATCH", "DELETE"):
                assert c.request(method, path, content=b"{}").status_code == 405, (method, path)
    assert digest(served.db) == served.before


def test_the_read_only_connection_refuses_writes(served: Served) -> None:
    with Store.open_readonly(served.db) as store:
        with pytest.raises((sqlite3.OperationalError, psycopg.errors.ReadOnlySqlTransaction), match=r"read-?only"):
            store.connection.execute("DELETE FROM messages")
        with pytest.raises((sqlite3.OperationalError, psycopg.errors.ReadOnlySqlTransaction), match=r"read-?only"):
            store.connection.execute("CREATE TABLE x (a INTEGER)")


def test_credentials_are_required(served: Served) -> None:
    with served.client(auth=False) as c:
        anonymous = c.get("/")
        api = c.get("/api/v1/projects")
        docs = c.get("/openapi.json")
        wrong = c.get("/", auth=(USER, "not the password"))
        stranger = c.get("/", auth=("nobody", PASSWORD))
        good = c.get("/", auth=(USER, PASSWORD))
    for r in (anonymous, api, docs, wrong, stranger):
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == 'Basic realm="edgeproof", charset="UTF-8"'
    assert "苏州" not in anonymous.text
    assert good.status_code == 200


def test_passwords_are_salted_scrypt_hashes() -> None:
    a, b = hash_password("same password"), hash_password("same password")
    assert a != b and a.startswith("scrypt$32768$8$1$")
    assert check_password("same password", a) and not check_password("other password", a)
    assert not check_password("same password", "md5$x")


def test_user_commands_and_a_removed_account_loses_access(
    store_target: StoreTarget, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    db = store_target
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # not a terminal: no prompt
    assert main(["user", "add", "--db", str(db), "office-1"]) == 2
    assert "no password" in capsys.readouterr().err
    monkeypatch.setenv(PASSWORD_ENV, "short")
    assert main(["user", "add", "--db", str(db), "office-1"]) == 2
    assert "too short" in capsys.readouterr().err
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    assert main(["user", "add", "--db", str(db), "office-1", "--role", "office"]) == 0
    assert main(["user", "add", "--db", str(db), "office-1"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["user", "list", "--db", str(db)]) == 0
    listed = capsys.readouterr().out
    assert "office-1\toffice\t" in listed and "scrypt" not in listed and PASSWORD not in listed
    assert read_users(db)["office-1"].role == "office"

    with Store(db):
        pass  # an empty store of the current schema
    port = free_port()
    server = WebServer(db, "127.0.0.1", port, auth=True).start()
    try:
        wait_port(port)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", auth=("office-1", PASSWORD)) as c:
            assert c.get("/api/v1/projects").json()["total"] == 0
            assert main(["user", "remove", "--db", str(db), "office-1"]) == 0
            assert c.get("/api/v1/projects").status_code == 401  # at once, though the success was cached
    finally:
        server.stop()
    assert main(["user", "remove", "--db", str(db), "office-1"]) == 2


def _edgeproof(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "edgeproof.cli", *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_edgeproof_web_refuses_to_start_without_accounts_unless_no_auth(store_target: StoreTarget) -> None:
    db = store_target
    with Store(db):
        pass
    port = free_port()
    refused = _edgeproof("web", "--db", str(db), "--http-port", str(port))
    _, err = refused.communicate(timeout=60)
    assert refused.returncode == 2 and "no web accounts" in err and "--no-auth" in err
    open_app = _edgeproof("web", "--db", str(db), "--http-port", str(port), "--no-auth")
    try:
        wait_port(port, timeout=30)
        assert httpx.get(f"http://127.0.0.1:{port}/api/v1/projects").json()["total"] == 0
    finally:
        open_app.send_signal(signal.SIGTERM)
        _, err = open_app.communicate(timeout=30)
    assert open_app.returncode == 0
    assert "without accounts (--no-auth)" in err and "web app stopped" in err


def test_edgeproof_ingest_serves_the_app_beside_the_consumer(
    served: Served, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    db: StoreTarget = served.db  # PostgreSQL: the served database itself (it receives no message here)
    if not is_postgres(served.db):
        db = tmp_path / "ingest.sqlite"
        db.write_bytes(Path(served.db).read_bytes())  # the seeded store, with its account
    port = free_port()
    ingest = _edgeproof(
        "ingest", "--db", str(db), "--mqtt-port", str(mosquitto.port), "--http-port", str(port), "--log-level", "INFO"
    )
    try:
        wait_port(port, timeout=30)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", auth=(USER, PASSWORD), timeout=60) as c:
            summary = c.get(f"/api/v1/projects/{PROJECT}").json()["summary"]
    finally:
        ingest.send_signal(signal.SIGTERM)
        _, err = ingest.communicate(timeout=30)
    assert summary["agents"][0]["oee"]["post"] == value(served.records[0], "oee", "post")
    assert ingest.returncode == 0, err
    assert "web app stopped" in err and PASSWORD not in err
