"""`edgeproof export` (write a project's evidence bundle) and `edgeproof verify` (check one offline).

export: exit 0 when written, 2 on a missing store, an unknown project or an agent without data.
verify: exit 0 only when every check passes, 1 when one fails, 2 when the bundle cannot be read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cloud_ingest.dialect import is_postgres, store_target

DEFAULT_DB = Path("var/ingest.sqlite")


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        type=store_target,
        default=DEFAULT_DB,
        help=f"the ingest's store: SQLite file or postgresql:// URL (default: ./{DEFAULT_DB})",
    )
    parser.add_argument("--project", required=True, help="retrofit project id (`edgeproof project`)")
    parser.add_argument(
        "--out", type=Path, default=None, help="bundle file to write (default: ./var/bundles/PROJECT.zip)"
    )


def run_export(args: argparse.Namespace) -> int:
    from cloud_ingest.bundle import export_bundle
    from cloud_ingest.projects import UnknownProject
    from cloud_ingest.report import ReportError, UnknownAgent
    from cloud_ingest.store import StoreUnavailable

    if not is_postgres(args.db) and not Path(args.db).is_file():
        print(f"export: error: no store at {args.db}", file=sys.stderr)
        return 2
    out = args.out if args.out is not None else Path("var/bundles") / f"{args.project}.zip"
    try:
        manifest = export_bundle(args.db, args.project, out)
    except (UnknownProject, ReportError, UnknownAgent) as exc:
        print(f"export: error: {exc}", file=sys.stderr)
        return 2
    except (ConnectionError, StoreUnavailable) as exc:  # PostgreSQL: unreachable, or not an ingest store yet
        print(f"export: error: {exc}", file=sys.stderr)
        return 1
    print(f"证据包 Evidence bundle: {out}")
    print(f"项目 Project: {manifest.project.id}")
    for agent, c in manifest.counts.items():
        print(f"  {agent}: {c.messages} messages, {c.held} held, {c.keys} key(s)")
    print(f"校验 Verify with: edgeproof verify {out}")
    return 0


def add_verify_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", type=Path, metavar="BUNDLE", help="bundle written by `edgeproof export` (.zip)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument(
        "--allow-unsigned",
        action="store_true",
        help="accept unsigned messages (agents older than signing); by default they fail the signature check",
    )


def run_verify(args: argparse.Namespace) -> int:
    from cloud_ingest.verify import BundleError, format_result, verify_bundle

    try:
        result = verify_bundle(args.bundle, allow_unsigned=args.allow_unsigned)
    except BundleError as exc:
        print(f"verify: error: {exc}", file=sys.stderr)
        return 2
    print(result.model_dump_json(indent=2) if args.json else format_result(result))
    return 0 if result.passed else 1
