"""Retrofit projects: which firm, provider and contract a before/after record belongs to.

A project names the firm (with its unified social credit code, GB 32100-2015), the site, the
digital-transformation service provider (服务商), the contract or project number, the baseline
and post windows and the edge agents whose data belongs to it. Projects are kept in the ingest's
store (SQLite file or PostgreSQL database), in a table of their own (`projects`, created here), and
come from a YAML file (`edgeproof project import`, errors with file, line and field) or from commands
(`edgeproof project create|set|show|list`). `edgeproof report --project ID` builds the evidence of
each of the project's agents over the project's windows (docs/projects.md).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from cloud_ingest.dialect import StoreTarget, connect, create_tables, mask
from edgeproof.configfile import ConfigError, load_yaml_model, located_error

# -- unified social credit code (统一社会信用代码), GB 32100-2015 --------------------------------

CREDIT_CODE_CHARSET = "0123456789ABCDEFGHJKLMNPQRTUWXY"  # digits and upper-case letters without I O Z S V
_CREDIT_WEIGHTS = [pow(3, i, 31) for i in range(17)]  # 1, 3, 9, 27, 19, 26, ...
_CREDIT_SHAPE = re.compile(rf"^[{CREDIT_CODE_CHARSET}]{{2}}[0-9]{{6}}[{CREDIT_CODE_CHARSET}]{{10}}$")


def credit_code_check_char(first17: str) -> str:
    """The 18th character of a credit code from its first 17 (GB 32100-2015, §4.3 and annex)."""
    total = sum(CREDIT_CODE_CHARSET.index(c) * w for c, w in zip(first17, _CREDIT_WEIGHTS, strict=True))
    return CREDIT_CODE_CHARSET[(31 - total % 31) % 31]


def check_credit_code(code: str) -> str:
    """The code, upper-cased and stripped, if it is a well-formed 18-character code with the right check character.

    Checked: length, character set (digits and capitals without I, O, Z, S, V), positions 3–8
    digits (administrative division), and the check character. Raises ValueError with the reason.
    """
    text = code.strip().upper()
    if len(text) != 18:
        raise ValueError(f"unified social credit code must have 18 characters, {text!r} has {len(text)}")
    bad = sorted({c for c in text if c not in CREDIT_CODE_CHARSET})
    if bad:
        raise ValueError(
            f"unified social credit code {text!r} contains {', '.join(repr(c) for c in bad)}: only digits and "
            f"capital letters other than I, O, Z, S and V are allowed"
        )
    if not _CREDIT_SHAPE.match(text):
        raise ValueError(f"unified social credit code {text!r}: characters 3–8 must be digits (division code)")
    expected = credit_code_check_char(text[:17])
    if text[17] != expected:
        raise ValueError(f"unified social credit code {text!r}: check character is {text[17]!r}, expected {expected!r}")
    return text


CreditCode = Annotated[str, AfterValidator(check_credit_code)]
ProjectId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
Text = Annotated[str, Field(min_length=1)]


# -- the model ----------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class ProjectFirm(_Strict):
    name: Text = Field(description="企业名称 firm name")
    credit_code: CreditCode = Field(description="统一社会信用代码 unified social credit code")
    industry: str | None = Field(None, description="所属细分行业 industry")


class ProjectWindow(_Strict):
    start: AwareDatetime
    end: AwareDatetime

    @model_validator(mode="after")
    def _ordered(self) -> ProjectWindow:
        if self.end <= self.start:
            raise ValueError(
                f"window must end after it starts (start {self.start.isoformat()}, end {self.end.isoformat()})"
            )
        return self

    def pair(self) -> tuple[datetime, datetime]:
        return self.start, self.end

    def text(self) -> str:
        return f"{self.start.isoformat()}/{self.end.isoformat()}"


class Project(_Strict):
    """One firm's retrofit project: who, with whom, when, and which agents measure it."""

    id: ProjectId = Field(description="项目编号 project id, used on the command line")
    firm: ProjectFirm
    site: str | None = Field(None, description="厂区 site")
    provider: Text = Field(description="数字化服务商 digital-transformation service provider")
    contract_no: str | None = Field(None, description="合同 / 项目编号 contract or project number")
    baseline: ProjectWindow = Field(description="改造前 baseline window")
    post: ProjectWindow = Field(description="改造后 post window")
    agents: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1, description="采集端 edge agent ids")

    @model_validator(mode="after")
    def _consistent(self) -> Project:
        if self.baseline.start < self.post.end and self.post.start < self.baseline.end:
            raise located_error(
                ("post",),
                f"baseline ({self.baseline.text()}) and post ({self.post.text()}) windows overlap",
            )
        seen: set[str] = set()
        for i, agent in enumerate(self.agents):
            if agent in seen:
                raise located_error(("agents", i), f"agent {agent!r} is listed twice")
            seen.add(agent)
        return self


def load_project_file(path: str | Path) -> Project:
    """A project from a YAML file; raises ConfigError naming file, line and field."""
    return load_yaml_model(path, Project)


# -- storage: a table of its own in the ingest's store -----------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS projects (
    project_id TEXT PRIMARY KEY,
    data       TEXT NOT NULL,   -- Project as JSON
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
"""


class ProjectExists(ValueError):
    pass


class UnknownProject(LookupError):
    pass


class ProjectStore:
    """The `projects` table of an ingest store. Opens its own connection; the ingest may run meanwhile."""

    def __init__(self, target: StoreTarget) -> None:
        self.path = mask(target)
        self._conn = connect(target)
        create_tables(self._conn, _SCHEMA)

    def __enter__(self) -> ProjectStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._conn.close()

    def get(self, project_id: str) -> Project:
        row = self._conn.execute("SELECT data FROM projects WHERE project_id = ?", (project_id,)).fetchone()
        if row is None:
            known = ", ".join(self.ids()) or "none"
            raise UnknownProject(f"no project {project_id!r} in {self.path} (projects: {known})")
        return Project.model_validate_json(row[0])

    def ids(self) -> list[str]:
        return [str(r[0]) for r in self._conn.execute("SELECT project_id FROM projects ORDER BY project_id")]

    def projects(self) -> list[Project]:
        rows = self._conn.execute("SELECT data FROM projects ORDER BY project_id").fetchall()
        return [Project.model_validate_json(r[0]) for r in rows]

    def exists(self, project_id: str) -> bool:
        return self._conn.execute("SELECT 1 FROM projects WHERE project_id = ?", (project_id,)).fetchone() is not None

    def put(self, project: Project, *, create: bool | None = None) -> bool:
        """Store `project`; True if it was new. create=True refuses an existing id, False a new one."""
        now = datetime.now(UTC).isoformat()
        data = project.model_dump_json()
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            exists = self.exists(project.id)
            if create is True and exists:
                raise ProjectExists(f"project {project.id!r} already exists in {self.path} (use `set` to change it)")
            if create is False and not exists:
                raise UnknownProject(f"no project {project.id!r} in {self.path}")
            if exists:
                self._conn.execute(
                    "UPDATE projects SET data = ?, updated_at = ? WHERE project_id = ?", (data, now, project.id)
                )
            else:
                self._conn.execute(
                    "INSERT INTO projects (project_id, data, created_at, updated_at) VALUES (?, ?, ?, ?)",
                    (project.id, data, now, now),
                )
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")
        return not exists


def update_project(project: Project, changes: dict[str, Any]) -> Project:
    """`project` with `changes` (dotted keys such as firm.name) applied and validated again."""
    data = project.model_dump(mode="json")
    for key, value in changes.items():
        target = data
        *parents, last = key.split(".")
        for p in parents:
            target = target.setdefault(p, {})
        target[last] = value
    return Project.model_validate(data)


__all__ = [
    "ConfigError",
    "CreditCode",
    "Project",
    "ProjectExists",
    "ProjectFirm",
    "ProjectStore",
    "ProjectWindow",
    "UnknownProject",
    "check_credit_code",
    "credit_code_check_char",
    "load_project_file",
    "update_project",
]
