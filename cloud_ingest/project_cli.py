"""`edgeproof project`: retrofit projects in the ingest's store — import from YAML, create, set, show, list.

Exit status 0 on success, 2 on a bad file, bad value, unknown or duplicate project, or missing store.
"""

from __future__ import annotations

import argparse
import json
import sys
import unicodedata
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from cloud_ingest.cli import _add_common, _setup_logging, parse_window
from cloud_ingest.dialect import StoreTarget, is_postgres
from cloud_ingest.projects import (
    ConfigError,
    Project,
    ProjectExists,
    ProjectStore,
    UnknownProject,
    load_project_file,
    update_project,
)
from cloud_ingest.store import Store

PROG = "project"


class _Usage(Exception):
    """A user error; str() is the message."""


def _field_options(parser: argparse.ArgumentParser, create: bool) -> None:
    parser.add_argument("--firm", dest="firm_name", required=create, help="企业名称 firm name")
    parser.add_argument(
        "--credit-code", required=create, help="统一社会信用代码 unified social credit code (18 characters)"
    )
    parser.add_argument("--industry", help="所属行业 industry")
    parser.add_argument("--site", help="厂区 site")
    parser.add_argument("--provider", required=create, help="数字化服务商 service provider")
    parser.add_argument("--contract-no", help="合同 / 项目编号 contract or project number")
    parser.add_argument("--baseline", required=create, metavar="START/END", help="改造前 window, ISO 8601 with offsets")
    parser.add_argument("--post", required=create, metavar="START/END", help="改造后 window, ISO 8601 with offsets")
    parser.add_argument(
        "--agent",
        dest="agents",
        action="append",
        required=create,
        metavar="AGENT_ID",
        help="agent id whose data belongs to the project (repeat for several)"
        + ("" if create else "; replaces the list"),
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="project_command", required=True, metavar="ACTION")
    p = sub.add_parser("import", help="create or update projects from YAML files (configs/demo-project.yaml)")
    _add_common(p)
    p.add_argument("files", nargs="+", type=Path, metavar="FILE.yaml")
    p = sub.add_parser("create", help="create a project from options")
    _add_common(p)
    p.add_argument("--id", dest="project_id", required=True, help="project id")
    _field_options(p, create=True)
    p = sub.add_parser("set", help="change fields of a project")
    _add_common(p)
    p.add_argument("project_id", metavar="PROJECT")
    _field_options(p, create=False)
    p.add_argument("--add-agent", action="append", default=[], metavar="AGENT_ID", help="add an agent")
    p.add_argument("--remove-agent", action="append", default=[], metavar="AGENT_ID", help="remove an agent")
    p = sub.add_parser("show", help="one project")
    _add_common(p)
    p.add_argument("project_id", metavar="PROJECT")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = sub.add_parser("list", help="all projects")
    _add_common(p)
    p.add_argument("--json", action="store_true", help="print a JSON array")


# -- helpers ------------------------------------------------------------------------------------


def _field_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(project)"


def validation_problems(e: ValidationError) -> list[str]:
    """'field: message' per error, with the field a model validator pointed at."""
    problems = []
    for err in e.errors():
        loc = (err.get("ctx") or {}).get("loc") or err["loc"]
        problems.append(f"{_field_path(tuple(loc))}: {err['msg']}")
    return problems


def _window(text: str | None) -> dict[str, str] | None:
    if text is None:
        return None
    try:
        start, end = parse_window(text)
    except ValueError as exc:
        raise _Usage(str(exc)) from None
    return {"start": start.isoformat(), "end": end.isoformat()}


def _changes(args: argparse.Namespace) -> dict[str, Any]:
    """Dotted field → value for the options given."""
    out: dict[str, Any] = {}
    for option, key in (
        ("firm_name", "firm.name"),
        ("credit_code", "firm.credit_code"),
        ("industry", "firm.industry"),
        ("site", "site"),
        ("provider", "provider"),
        ("contract_no", "contract_no"),
        ("agents", "agents"),
    ):
        value = getattr(args, option)
        if value is not None:
            out[key] = value
    for name in ("baseline", "post"):
        window = _window(getattr(args, name))
        if window is not None:
            out[name] = window
    return out


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _pad(text: str, width: int) -> str:
    return text + " " * (width - _width(text))


def format_project(p: Project) -> str:
    rows = [
        ("项目编号 Project", p.id),
        ("企业名称 Firm", p.firm.name),
        ("统一社会信用代码 Credit code", p.firm.credit_code),
        ("所属行业 Industry", p.firm.industry or "—"),
        ("厂区 Site", p.site or "—"),
        ("数字化服务商 Provider", p.provider),
        ("合同编号 Contract no.", p.contract_no or "—"),
        ("改造前 Baseline", p.baseline.text()),
        ("改造后 Post", p.post.text()),
        ("采集端 Agents", ", ".join(p.agents)),
    ]
    width = max(_width(k) for k, _ in rows)
    return "\n".join(f"{_pad(k, width)}  {v}" for k, v in rows)


def format_projects(projects: list[Project]) -> str:
    head = (
        "id",
        "企业 firm",
        "信用代码 credit code",
        "服务商 provider",
        "合同 contract",
        "基线 baseline",
        "改造后 post",
    )
    rows = [(*head, "采集端 agents")]
    for p in projects:
        rows.append(
            (
                p.id,
                p.firm.name,
                p.firm.credit_code,
                p.provider,
                p.contract_no or "—",
                p.baseline.text(),
                p.post.text(),
                ",".join(p.agents),
            )
        )
    widths = [max(_width(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(_pad(c, w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def _open(db: StoreTarget, create: bool) -> ProjectStore:
    missing = not is_postgres(db) and not Path(db).is_file()
    if missing and not create:
        raise _Usage(f"no store at {db}")
    try:
        if missing or (create and is_postgres(db)):  # a proper ingest store, so that the ingest can use it as it is
            Store(db).close()
        return ProjectStore(db)
    except ConnectionError as exc:  # the message is masked
        raise _Usage(str(exc)) from None


# -- actions ------------------------------------------------------------------------------------


def _import(args: argparse.Namespace) -> int:
    loaded = []
    problems: list[str] = []
    for path in args.files:
        try:
            loaded.append(load_project_file(path))
        except ConfigError as exc:
            problems += [f"{exc.path}:{p}" for p in exc.problems]
    if problems:  # nothing is stored unless every file is valid
        for p in problems:
            print(f"{PROG}: error: {p}", file=sys.stderr)
        return 2
    with _open(args.db, create=True) as store:
        for project in loaded:
            created = store.put(project)
            print(f"{'created' if created else 'updated'} project {project.id}")
    return 0


def _create(args: argparse.Namespace) -> int:
    data: dict[str, Any] = {"id": args.project_id, "firm": {}}
    for key, value in _changes(args).items():
        if key.startswith("firm."):
            data["firm"][key.removeprefix("firm.")] = value
        else:
            data[key] = value
    project = Project.model_validate(data)
    with _open(args.db, create=True) as store:
        store.put(project, create=True)
    print(f"created project {project.id}")
    return 0


def _set(args: argparse.Namespace) -> int:
    with _open(args.db, create=False) as store:
        project = store.get(args.project_id)
        changes = _changes(args)
        agents = list(changes.get("agents", project.agents))
        for a in args.add_agent:
            if a not in agents:
                agents.append(a)
        for a in args.remove_agent:
            if a not in agents:
                raise _Usage(f"agent {a!r} is not in project {project.id}")
            agents.remove(a)
        if args.add_agent or args.remove_agent:
            changes["agents"] = agents
        if not changes:
            raise _Usage("nothing to change: give at least one field option")
        store.put(update_project(project, changes), create=False)
    print(f"updated project {project.id}: {', '.join(sorted(changes))}")
    return 0


def _show(args: argparse.Namespace) -> int:
    with _open(args.db, create=False) as store:
        project = store.get(args.project_id)
    print(project.model_dump_json(indent=2) if args.json else format_project(project))
    return 0


def _list(args: argparse.Namespace) -> int:
    with _open(args.db, create=False) as store:
        projects = store.projects()
    if args.json:
        print(json.dumps([p.model_dump(mode="json") for p in projects], ensure_ascii=False, indent=2))
    else:
        print(format_projects(projects))
    return 0


def run(args: argparse.Namespace) -> int:
    _setup_logging(args.log_level)
    actions = {"import": _import, "create": _create, "set": _set, "show": _show, "list": _list}
    try:
        return actions[args.project_command](args)
    except ValidationError as exc:
        for p in validation_problems(exc):
            print(f"{PROG}: error: {p}", file=sys.stderr)
        return 2
    except (_Usage, ProjectExists, UnknownProject) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edgeproof project", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))
