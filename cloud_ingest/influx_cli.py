"""`edgeproof influx backfill` and the `--influx-*` options of `edgeproof ingest` (docs/influx.md).

The token is read from $EDGEPROOF_INFLUX_TOKEN only: command lines are visible to every local user.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from influxdb_client import Point

from cloud_ingest.dialect import is_postgres, store_target
from cloud_ingest.influx import (
    TOKEN_ENV,
    InfluxSettings,
    InfluxSink,
    RegisterLookup,
    describe_error,
    open_client,
    parse,
    to_points,
    write_points,
)
from cloud_ingest.store import Store, iso

log = logging.getLogger(__name__)

# health readings are live state (the store keeps only the latest), not re-exported
BACKFILL_KINDS = ("birth", "state", "kpi", "site", "evicted")


def add_influx_arguments(parser: argparse.ArgumentParser, backfill: bool = False) -> None:
    """The ingest's optional copy to InfluxDB, or (`backfill`) the required target of a backfill."""
    group = parser.add_argument_group(f"InfluxDB (a copy of the time series; the token is read from ${TOKEN_ENV})")
    group.add_argument("--influx-url", required=backfill, default=None, help="e.g. http://influxdb:8086")
    group.add_argument("--influx-org", required=backfill, default=None, help="InfluxDB organisation")
    group.add_argument("--influx-bucket", required=backfill, default=None, help="InfluxDB bucket")
    defaults = InfluxSettings.model_fields
    group.add_argument("--influx-batch-size", type=int, default=defaults["batch_size"].default, help="points/request")
    group.add_argument(
        "--influx-timeout", type=float, default=defaults["timeout_s"].default, help="seconds per write request"
    )
    if backfill:
        return
    group.add_argument(
        "--influx-max-buffered",
        type=int,
        default=defaults["max_buffered"].default,
        help="messages the ingest keeps while InfluxDB is down; past it the oldest are dropped (and counted)",
    )


def settings_from_args(args: argparse.Namespace) -> InfluxSettings | None:
    """None without --influx-url; ValueError (user-ready) when org or bucket is missing."""
    if args.influx_url is None:
        return None
    missing = [f"--influx-{n}" for n in ("org", "bucket") if getattr(args, f"influx_{n}") is None]
    if missing:
        raise ValueError(f"--influx-url needs {' and '.join(missing)}")
    return InfluxSettings(
        url=args.influx_url,
        org=args.influx_org,
        bucket=args.influx_bucket,
        batch_size=args.influx_batch_size,
        timeout_s=args.influx_timeout,
        max_buffered=getattr(args, "influx_max_buffered", InfluxSettings.model_fields["max_buffered"].default),
    )


def sink_from_args(args: argparse.Namespace) -> InfluxSink | None:
    """The started sink of `edgeproof ingest`, or None without --influx-url."""
    settings = settings_from_args(args)
    if settings is None:
        return None
    return InfluxSink(settings, store_path=args.db).start()


# -- backfill --------------------------------------------------------------------------------------


def stored_points(
    store: Store, since: datetime | None = None, agent_id: str | None = None, kinds: Counter[str] | None = None
) -> Iterator[Point]:
    """The points of every stored message received at or after `since`, by agent and seq (`kinds` counts them).

    Reads the store's `messages` table directly (SQLite or PostgreSQL), as the evidence bundle does:
    only stored (verified or unsigned) messages are there, never held, duplicate or dead-lettered ones.
    """
    sql = f"SELECT topic, payload FROM messages WHERE kind IN ({', '.join('?' * len(BACKFILL_KINDS))})"
    params: list[str] = list(BACKFILL_KINDS)
    if since is not None:
        sql += " AND received_at >= ?"
        params.append(iso(since))
    if agent_id is not None:
        sql += " AND agent_id = ?"
        params.append(agent_id)
    sql += " ORDER BY agent_id, seq"
    lookup = RegisterLookup(store)
    for topic, payload in store.connection.execute(sql, params):
        message = parse(str(topic), str(payload))
        if message is not None:
            if kinds is not None:
                kinds[message.kind] += 1
            yield from to_points(message, lookup(message))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="influx_command", required=True, metavar="ACTION")
    backfill = sub.add_parser("backfill", help="write the stored KPI, site and state messages to InfluxDB again")
    backfill.add_argument(
        "--db",
        type=store_target,
        default=Path("var/ingest.sqlite"),
        help="the ingest's store: SQLite file or postgresql:// URL",
    )
    backfill.add_argument(
        "--since", default=None, metavar="ISO", help="only messages the ingest received from then on (default: all)"
    )
    backfill.add_argument("--agent", default=None, help="only this agent")
    backfill.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    add_influx_arguments(backfill, backfill=True)


def run(args: argparse.Namespace) -> int:
    """Backfill; exit 2 on bad arguments or a missing store, 1 when InfluxDB refuses or cannot be reached."""
    from cloud_ingest.cli import _setup_logging, parse_time

    _setup_logging(args.log_level)
    prog = "influx backfill"
    try:
        since = parse_time(args.since) if args.since is not None else None
        settings = settings_from_args(args)
    except ValueError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    assert settings is not None  # --influx-url is required here
    if not is_postgres(args.db) and not Path(args.db).is_file():
        print(f"{prog}: error: no store at {args.db}", file=sys.stderr)
        return 2
    try:
        store = Store(args.db)
    except ConnectionError as exc:  # a PostgreSQL store that cannot be reached (the URL masked)
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    kinds: Counter[str] = Counter()
    client = open_client(settings)
    try:
        written = write_points(client, settings, stored_points(store, since, args.agent, kinds))
    except Exception as exc:  # urllib3 / HTTP errors of every kind
        print(f"{prog}: error: writing to {settings.url} failed: {describe_error(exc)}", file=sys.stderr)
        return 1
    finally:
        client.close()
        store.close()
    detail = ", ".join(f"{kind} {n}" for kind, n in sorted(kinds.items())) or "nothing stored in that range"
    print(f"wrote {written} point(s) to {settings.url} bucket {settings.bucket} from {sum(kinds.values())} "
          f"message(s): {detail}")
    return 0
