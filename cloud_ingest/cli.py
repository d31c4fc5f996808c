"""Command line of the cloud side: `ingest` (MQTT → SQLite or PostgreSQL), `report` (before/after evidence), `gaps`.

Mounted by `edgeproof.cli` as `edgeproof ingest` / `edgeproof report`; also runs standalone as
`python -m cloud_ingest ...`.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import TypeVar

from cloud_ingest.consumer import DEFAULT_CLIENT_ID, IngestService, ingest_subscription
from cloud_ingest.dialect import StoreTarget, is_postgres, mask, store_target
from cloud_ingest.evidence import EvidenceReport
from cloud_ingest.render import pct
from cloud_ingest.report import ReportError, UnknownAgent, build_report
from cloud_ingest.store import GapReport, Neighbour, Store

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_DB = Path("var/ingest.sqlite")
PASSWORD_ENV = "EDGEPROOF_MQTT_PASSWORD"  # not an option: command lines are visible to every local user


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        type=store_target,
        default=DEFAULT_DB,
        help=f"SQLite file or postgresql://user@host/database URL (default: ./{DEFAULT_DB})",
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGTERM or SIGINT while the block runs; the previous handlers come back after it."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %s: stopping", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _setup_logging(level: str) -> None:
    if not logging.getLogger().handlers:  # the host CLI may have configured logging already
        from edgeproof.logs import setup_logging

        setup_logging(level)


# -- ingest ------------------------------------------------------------------------------------


def add_ingest_arguments(parser: argparse.ArgumentParser) -> None:
    _add_common(parser)
    parser.add_argument("--mqtt-host", default="127.0.0.1", help="broker host (default: 127.0.0.1)")
    parser.add_argument("--mqtt-port", type=int, default=1883, help="broker port (default: 1883)")
    parser.add_argument(
        "--client-id",
        default=DEFAULT_CLIENT_ID,
        help=f"stable MQTT client id of the persistent session (default: {DEFAULT_CLIENT_ID})",
    )
    parser.add_argument(
        "--share-group",
        default=None,
        metavar="GROUP",
        help="run as one of several workers on the shared subscription $share/GROUP/...; each worker "
        "needs its own --client-id (docs/scale-out.md)",
    )
    parser.add_argument(
        "--mqtt-username", default=None, help=f"broker user name; the password is read from ${PASSWORD_ENV}"
    )
    from cloud_ingest.influx_cli import add_influx_arguments  # loads influxdb-client: only for the ingest

    add_influx_arguments(parser)
    from cloud_ingest.web.server import add_web_arguments  # the evaluator's web app (docs/web.md)

    add_web_arguments(parser)


def run_ingest(args: argparse.Namespace) -> int:
    """Consume until SIGTERM/SIGINT (exit 0); exit 1 if the store fails, 2 on a bad share group or client id."""
    _setup_logging(args.log_level)
    try:
        ingest_subscription(args.share_group, args.client_id)
    except ValueError as exc:
        print(f"ingest: error: {exc}", file=sys.stderr)
        return 2
    from cloud_ingest.web.server import WebConfigError, start_web

    try:
        web = start_web(args)  # None without --http-port; else the web app beside the consumer (docs/web.md)
    except WebConfigError as exc:
        print(f"ingest: error: {exc}", file=sys.stderr)
        return 2
    from cloud_ingest.influx_cli import sink_from_args

    try:
        sink = sink_from_args(args)  # None without --influx-url
    except ValueError as exc:
        print(f"ingest: error: {exc}", file=sys.stderr)
        return 2
    with stop_on_signals() as stop:
        try:
            service = IngestService(
                args.db,
                args.mqtt_host,
                args.mqtt_port,
                client_id=args.client_id,
                username=args.mqtt_username,
                password=os.environ.get(PASSWORD_ENV) if args.mqtt_username else None,
                share_group=args.share_group,
                sink=sink,
            )
            return service.run_forever(stop)
        except ConnectionError as exc:  # a PostgreSQL store that cannot be reached (the URL masked)
            print(f"ingest: error: {exc}", file=sys.stderr)
            return 1
        finally:
            if web is not None:
                web.stop()
            if sink is not None:
                sink.close()  # after the consumer stopped: flushes what it can, counts the rest


def _open_existing(open_store: Callable[[StoreTarget], T], db: StoreTarget, prog: str) -> T | int:
    """`open_store(db)` for a store that exists, else the exit status after saying why: 2 for no SQLite
    file (a PostgreSQL URL is tried by opening it), 1 for a server that cannot be reached (URL masked)."""
    if not (is_postgres(db) or Path(db).is_file()):
        print(f"{prog}: error: no store at {db}", file=sys.stderr)
        return 2
    try:
        return open_store(db)
    except ConnectionError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1


# -- report ------------------------------------------------------------------------------------


def parse_time(text: str) -> datetime:
    """An ISO 8601 date-time with a UTC offset; raises ValueError with a user-ready message."""
    try:
        t = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 date-time") from None
    if t.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset (add e.g. +08:00 or Z)")
    return t


def parse_window(text: str) -> tuple[datetime, datetime]:
    """'START/END', both ISO 8601 with a UTC offset; raises ValueError with a user-ready message."""
    parts = text.split("/")
    if len(parts) != 2:
        raise ValueError(f"{text!r}: expected START/END, e.g. 2024-03-01T00:00+08:00/2024-04-01T00:00+08:00")
    return parse_time(parts[0]), parse_time(parts[1])


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    _add_common(parser)
    parser.add_argument(
        "--project", default=None, help="retrofit project id (`edgeproof project`): its agents and windows"
    )
    parser.add_argument("--agent", default=None, help="agent id (without --project)")
    parser.add_argument("--baseline", metavar="START/END", help="window before the retrofit (without --project)")
    parser.add_argument("--post", metavar="START/END", help="window after the retrofit (without --project)")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output directory (default: ./var/reports/AGENT, or ./var/reports/PROJECT with a folder per agent)",
    )
    parser.add_argument("--no-pdf", action="store_true", help="skip the PDF files (they need Pango and a CJK font)")


def format_table(report: EvidenceReport) -> str:
    rows = [("indicator", "baseline", "post", "change", "points")]
    for i in report.indicators:
        change = "—" if i.change is None else f"{i.change * 100:+.1f} pp"
        points = (
            f"{i.baseline.band_points:g} → {i.post.band_points:g}"
            if (i.scored and i.baseline.band_points is not None and i.post.band_points is not None)
            else ""
        )
        rows.append((i.label.en, pct(i.baseline.value), pct(i.post.value), change, points))
    width = max(len(r[0]) for r in rows)
    lines = [f"{r[0]:<{width}}  {r[1]:>9}  {r[2]:>9}  {r[3]:>10}  {r[4]}".rstrip() for r in rows]
    q = report.data_quality
    lines.append(
        f"messages {q.messages_received}, missing {q.missing_messages} in {len(q.sequence_gaps)} gap(s), "
        f"duplicates {q.duplicates_received}, dead letters {q.dead_letters}"
    )
    return "\n".join(lines)


def run_report(args: argparse.Namespace) -> int:
    """Write the evidence files; exit 2 on bad windows, a missing store, an unknown agent or project."""
    _setup_logging(args.log_level)
    prog = "report"
    if args.project is not None:
        if args.agent or args.baseline or args.post:
            print(f"{prog}: error: --project takes the agents and windows from the project", file=sys.stderr)
            return 2
        return _report_project(args)
    missing = [f"--{name}" for name in ("agent", "baseline", "post") if getattr(args, name) is None]
    if missing:
        print(
            f"{prog}: error: give --project, or --agent, --baseline and --post (missing {' '.join(missing)})",
            file=sys.stderr,
        )
        return 2
    try:
        baseline = parse_window(args.baseline)
        post = parse_window(args.post)
    except ValueError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    store = _open_existing(Store, args.db, prog)
    if isinstance(store, int):
        return store
    with store:
        try:
            report = build_report(store, args.agent, baseline, post)
        except (ReportError, UnknownAgent) as exc:
            print(f"{prog}: error: {exc}", file=sys.stderr)
            return 2
    out = args.out if args.out is not None else Path("var/reports") / args.agent
    return _write(report, out, not args.no_pdf)


def _write(report: EvidenceReport, out: Path, pdf: bool) -> int:
    from cloud_ingest.record import PdfUnavailable, write_record

    try:
        paths = write_record(report, out, pdf=pdf)
    except PdfUnavailable as exc:
        print(f"report: error: {exc} (or use --no-pdf)", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    print(format_table(report))
    return 0


def _report_project(args: argparse.Namespace) -> int:
    from cloud_ingest.projects import ProjectStore, UnknownProject
    from cloud_ingest.record import build_project_reports

    prog = "report"
    projects = _open_existing(ProjectStore, args.db, prog)
    if isinstance(projects, int):
        return projects
    with projects:
        try:
            project = projects.get(args.project)
        except UnknownProject as exc:
            print(f"{prog}: error: {exc}", file=sys.stderr)
            return 2
    with Store(args.db) as store:
        try:
            reports = build_project_reports(store, project)  # with the project's declared figures
        except (ReportError, UnknownAgent) as exc:
            print(f"{prog}: error: project {project.id}: {exc}", file=sys.stderr)
            return 2
    out = args.out if args.out is not None else Path("var/reports") / project.id
    for report in reports:  # one folder per agent, also for a single agent: the layout does not depend on it
        print(f"project {project.id}, agent {report.agent_id}:")
        code = _write(report, out / report.agent_id, not args.no_pdf)
        if code:
            return code
    return 0


# -- gaps --------------------------------------------------------------------------------------


def add_gaps_arguments(parser: argparse.ArgumentParser) -> None:
    _add_common(parser)
    parser.add_argument("--agent", required=True, help="agent id")
    parser.add_argument("--json", action="store_true", help="print the gap report as JSON")


def _side(n: Neighbour | None) -> str:
    if n is None:
        return "start"
    return f"seq {n.seq} (produced {n.produced_at:%Y-%m-%dT%H:%M:%SZ}, received {n.received_at:%Y-%m-%dT%H:%M:%SZ})"


def format_gaps(report: GapReport) -> str:
    lines = [
        f"agent {report.agent_id}: {report.received} stored, highest seq {report.highest_seq}; "
        f"{report.evicted} declared evicted ({len(report.declarations)} declaration(s)), {report.missing} missing, "
        f"{report.declared_but_received} declared but received"
        + (
            f"; {report.pending} held pending a key, {report.rejected} rejected"
            if report.pending or report.rejected
            else ""
        )
    ]
    for g in report.gaps:
        if g.held is not None:
            what = g.held
        else:
            what = "missing" if g.declared_by is None else f"evicted ({g.reason}), declared by seq {g.declared_by}"
        span = f"{g.first}" if g.first == g.last else f"{g.first}-{g.last}"
        lines.append(f"  seq {span} ({g.count}): {what}; after {_side(g.after)}, before {_side(g.before)}")
    return "\n".join(lines)


def run_gaps(args: argparse.Namespace) -> int:
    """Print an agent's gap report; exit 2 on a missing store or an agent it has never heard of."""
    _setup_logging(args.log_level)
    store = _open_existing(Store, args.db, "gaps")
    if isinstance(store, int):
        return store
    with store:
        if not store.has_agent(args.agent) and not store.has_held(args.agent):
            print(f"gaps: error: no messages of agent {args.agent!r} in {mask(args.db)}", file=sys.stderr)
            return 2
        report = store.gap_report(args.agent)
    print(report.model_dump_json(indent=2) if args.json else format_gaps(report))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cloud_ingest", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_ingest_arguments(sub.add_parser("ingest", help="run the cloud ingest (MQTT → SQLite or PostgreSQL)"))
    add_report_arguments(sub.add_parser("report", help="build before/after evidence from a store"))
    add_gaps_arguments(sub.add_parser("gaps", help="an agent's sequence gaps: declared evicted or missing"))
    args = parser.parse_args(argv)
    runners = {"ingest": run_ingest, "report": run_report, "gaps": run_gaps}
    return runners[args.command](args)
