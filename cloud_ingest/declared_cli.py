"""`edgeproof baseline`: declared (manual) figures of a project — import a CSV/Excel file, list, template, withdraw.

For firms without a measured baseline. Every import is labelled declared (申报/导入), with who declared
the figures and when; withdrawing keeps the import in the store's history.
Exit status 0 on success, 2 on a bad file, bad value, unknown project or import, or missing store.
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import json
import logging
import sys
from datetime import datetime
from pathlib import Path

from cloud_ingest.cli import DEFAULT_DB, _setup_logging, parse_time
from cloud_ingest.declared import (
    INDICATORS,
    DeclaredFigure,
    DeclaredFileError,
    DeclaredImport,
    DeclaredStore,
    DeclaredStoreError,
    UnknownImport,
    is_ratio,
    load_declared_file,
    write_template,
)
from cloud_ingest.dialect import StoreTarget, is_postgres, store_target
from cloud_ingest.project_cli import _pad, _width
from cloud_ingest.projects import ProjectStore, UnknownProject

log = logging.getLogger(__name__)

PROG = "baseline"
DECLARED_NOTE = "申报/导入数据，非实测 — declared (imported) figures, not measured"


class _Usage(Exception):
    """A user error; str() is the message."""


def _add_common(parser: argparse.ArgumentParser, store: bool = True) -> None:
    if store:  # --db as in every other command; --store as another name for it
        parser.add_argument(
            "--db",
            "--store",
            dest="db",
            type=store_target,
            default=DEFAULT_DB,
            help=f"the ingest's store: SQLite file or postgresql:// URL (default: ./{DEFAULT_DB})",
        )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="baseline_command", required=True, metavar="ACTION")
    p = sub.add_parser("import", help="import declared figures from a filled-in template (.csv or .xlsx)")
    _add_common(p)
    p.add_argument("file", type=Path, metavar="FILE")
    p.add_argument("--project", required=True, help="项目编号 project id")
    p.add_argument("--declared-by", required=True, help="申报人 who at the firm declares the figures (name / role)")
    p.add_argument("--declared-at", help="申报时间 when they were declared, ISO 8601 with a UTC offset (default: now)")
    p = sub.add_parser("list", help="a project's declared imports and their figures")
    _add_common(p)
    p.add_argument("--project", required=True, help="项目编号 project id")
    p.add_argument("--all", action="store_true", help="include withdrawn imports")
    p.add_argument("--json", action="store_true", help="print a JSON array of imports")
    p = sub.add_parser("template", help="write an empty template to fill in (.xlsx with instructions, or .csv)")
    _add_common(p, store=False)
    p.add_argument("out", type=Path, metavar="OUT.xlsx|OUT.csv")
    p = sub.add_parser("withdraw", help="withdraw an import: its figures stop counting, its record stays")
    _add_common(p)
    p.add_argument("import_id", type=int, metavar="IMPORT_ID")
    p.add_argument("--reason", required=True, help="why it is withdrawn")


# -- helpers ------------------------------------------------------------------------------------


def _store_must_exist(db: StoreTarget) -> None:
    if not is_postgres(db) and not Path(db).is_file():
        raise _Usage(f"no store at {db}")


def _project_must_exist(db: StoreTarget, project_id: str) -> None:
    _store_must_exist(db)
    with ProjectStore(db) as projects:
        projects.get(project_id)  # UnknownProject names the known ones


def _declared_at(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return parse_time(text)
    except ValueError as e:
        raise _Usage(f"--declared-at {e}") from None


def _os_user() -> str | None:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name in some containers
        return None


def _value(f: DeclaredFigure) -> str:
    if f.value is None:
        return "—"
    return f"{f.value * 100:.4g}%" if is_ratio(f.indicator) else f"{f.value:.6g} kWh"


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:.10g}"


def format_import(imp: DeclaredImport) -> str:
    status = "有效 active"
    if imp.withdrawn_at is not None:
        status = f"已撤回 withdrawn {imp.withdrawn_at.isoformat()}: {imp.withdrawn_reason}"
    lines = [
        f"#{imp.import_id}  {status}",
        f"  申报人 declared by {imp.declared_by}, 申报时间 declared at {imp.declared_at.isoformat()}",
        f"  导入 imported at {imp.imported_at.isoformat()} by {imp.imported_by or '—'}",
        f"  文件 file {imp.file_name}  sha256 {imp.file_sha256}",
    ]
    rows = [
        (
            "窗口 window",
            "指标 indicator",
            "设备 machine",
            "数值 value",
            "分子 num.",
            "分母 den.",
            "期间 period",
            "依据 source",
        ),
    ]
    for f in imp.figures:
        rows.append(
            (
                f.window,
                f"{INDICATORS[f.indicator].zh} {f.indicator}",
                f.machine_id or "全厂 plant",
                _value(f),
                _number(f.numerator),
                _number(f.denominator),
                f"{f.period_start}/{f.period_end}" if f.period_start else "—",
                f.source_document or "—",
            )
        )
    widths = [max(_width(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines += ["  " + "  ".join(_pad(c, w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


# -- actions ------------------------------------------------------------------------------------


def _import(args: argparse.Namespace) -> int:
    declared_at = _declared_at(args.declared_at)
    _project_must_exist(args.db, args.project)
    try:
        data = args.file.read_bytes()
    except OSError as e:
        raise _Usage(f"cannot read {args.file}: {e.strerror or e}") from None
    figures = load_declared_file(args.file)
    with DeclaredStore(args.db) as store:
        imp = store.add(
            args.project,
            figures,
            declared_by=args.declared_by,
            declared_at=declared_at,
            file_name=args.file.name,
            file_sha256=hashlib.sha256(data).hexdigest(),
            imported_by=_os_user(),
        )
    log.info(
        "declared figures imported",
        extra={"project": imp.project_id, "import_id": imp.import_id, "figures": len(imp.figures)},
    )
    print(f"imported #{imp.import_id}: {len(imp.figures)} figures for project {imp.project_id} from {imp.file_name}")
    print(f"sha256 {imp.file_sha256}")
    when = imp.declared_at.isoformat()
    print(
        f"申报/导入数据，非实测：{imp.declared_by} 于 {when} 申报 — "
        f"declared (imported) figures, not measured: declared by {imp.declared_by} at {when}"
    )
    return 0


def _list(args: argparse.Namespace) -> int:
    _project_must_exist(args.db, args.project)
    with DeclaredStore(args.db) as store:
        imports = store.imports(args.project, include_withdrawn=args.all)
    if args.json:
        print(json.dumps([i.model_dump(mode="json") for i in imports], ensure_ascii=False, indent=2))
    elif not imports:
        print(f"no declared figures for project {args.project}" + ("" if args.all else " (--all: withdrawn too)"))
    else:
        print(DECLARED_NOTE)
        print("\n\n".join(format_import(i) for i in imports))
    return 0


def _template(args: argparse.Namespace) -> int:
    if args.out.suffix.lower() not in (".xlsx", ".csv"):
        raise _Usage(f"{args.out}: the template is written as .xlsx or .csv")
    if args.out.exists():  # it may be a filled-in copy
        raise _Usage(f"{args.out} exists; give another name")
    print(f"wrote {write_template(args.out)}")
    return 0


def _withdraw(args: argparse.Namespace) -> int:
    _store_must_exist(args.db)
    with DeclaredStore(args.db) as store:
        imp = store.withdraw(args.import_id, args.reason)
    log.info("declared import withdrawn", extra={"project": imp.project_id, "import_id": imp.import_id})
    print(
        f"withdrew #{imp.import_id} of project {imp.project_id} ({imp.file_name}, {len(imp.figures)} figures): "
        f"{imp.withdrawn_reason}; it stays in the history (list --all)"
    )
    return 0


def run(args: argparse.Namespace) -> int:
    _setup_logging(args.log_level)
    actions = {"import": _import, "list": _list, "template": _template, "withdraw": _withdraw}
    try:
        return actions[args.baseline_command](args)
    except DeclaredFileError as exc:
        for p in exc.problems:
            print(f"{PROG}: error: {p}", file=sys.stderr)
        return 2
    except (_Usage, DeclaredStoreError, UnknownImport, UnknownProject, ConnectionError) as exc:
        for line in str(exc).splitlines():  # a store refusal may name several rows
            print(f"{PROG}: error: {line}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edgeproof baseline", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))
