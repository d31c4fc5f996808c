"""`edgeproof verify BUNDLE`: check an evidence bundle offline (docs/verification.md).

Four checks, each passed or failed, with what failed named:

1. hashes      every file's SHA-256 matches the manifest; no file missing, none unlisted
2. signatures  every message used in the evidence is signed by a key enrolled for its agent (in the
               bundle's keys) that was not revoked at its produced_at; unsigned messages fail
               unless `allow_unsigned`
3. coverage    per agent: the sequence numbers present as verifiable messages, the gaps (declared
               evicted by a verifiable declaration, held, or missing), and whether they are exactly
               the gaps the record states
4. recompute   the verifiable messages are ingested into a temporary SQLite store with the bundle's
               keys enrolled, the record is built again with the project's windows by the functions
               `edgeproof report --project` uses, and compared with the bundle's record field by field

Fields the signed messages cannot reproduce are left out of the comparison (EXCLUDED_FIELDS).
"""

from __future__ import annotations

import json
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from cloud_ingest.bundle import (
    DECLARED,
    MANIFEST,
    BundleMessage,
    Manifest,
    held_path,
    keys_path,
    messages_path,
    read_bundle,
    read_declared,
    record_path,
    sha256,
)
from cloud_ingest.evidence import EvidenceReport
from cloud_ingest.record import build_project_reports
from cloud_ingest.report import OEE_KEYS, SITE_KEYS, ReportError, UnknownAgent
from cloud_ingest.store import Store
from edgeproof.contract import AnySequenced, EvictionDeclaration, MachineKpi, parse_sequenced
from edgeproof.signing import decode_public_key, fingerprint, key_id, verify

CheckName = Literal["hashes", "signatures", "coverage", "recompute"]

# Fields of the record that the signed messages cannot reproduce, left out of the comparison:
# when the record was built, and what only the ingest saw (redelivered copies, dead letters,
# the retained online/offline status, which is not a sequenced, signed message), and the messages
# held apart, which the recompute never ingests (the signatures check lists them from the held file).
EXCLUDED_FIELDS: tuple[str, ...] = (
    "generated_at",
    "data_quality.duplicates_received",
    "data_quality.dead_letters",
    "data_quality.last_status",
    "data_quality.held",
)

LABELS: dict[CheckName, tuple[str, str]] = {
    "hashes": ("文件完整性", "File hashes"),
    "signatures": ("签名", "Signatures"),
    "coverage": ("序列覆盖", "Sequence coverage"),
    "recompute": ("指标重算", "Recompute"),
}


class Finding(BaseModel):
    """One thing that does not hold (or, in `notes`, one thing worth knowing)."""

    agent: str | None = None
    file: str | None = None
    seq: int | None = None
    kind: str | None = None
    path: str | None = Field(None, description="field path in the record, e.g. indicators.oee.post.value")
    record: Any = Field(None, description="the record's value")
    recomputed: Any = Field(None, description="the value recomputed from the signed messages")
    messages: str | None = Field(None, description="the messages that feed the field")
    reason: str


class CheckResult(BaseModel):
    name: CheckName
    passed: bool
    summary: str
    failures: list[Finding] = Field(default_factory=list)
    notes: list[Finding] = Field(default_factory=list)


class KeyInfo(BaseModel):
    agent: str
    key_id: str
    fingerprint: str
    enrolled_at: datetime | None
    revoked_at: datetime | None


class VerifyResult(BaseModel):
    bundle: str
    project: str | None
    agents: list[str]
    passed: bool
    keys: list[KeyInfo]
    checks: list[CheckResult]
    excluded_fields: list[str] = Field(default_factory=lambda: list(EXCLUDED_FIELDS))

    def check(self, name: CheckName) -> CheckResult:
        return next(c for c in self.checks if c.name == name)


class _Key(BaseModel):
    key_id: str
    public_key: str
    enrolled_at: datetime | None = None
    revoked_at: datetime | None = None


def seq_ranges(seqs: list[int] | set[int]) -> list[tuple[int, int]]:
    """Sorted numbers as inclusive runs: [1, 2, 3, 7] → [(1, 3), (7, 7)]."""
    out: list[tuple[int, int]] = []
    for s in sorted(seqs):
        if out and s == out[-1][1] + 1:
            out[-1] = (out[-1][0], s)
        else:
            out.append((s, s))
    return out


def ranges_text(seqs: list[int] | set[int]) -> str:
    return ", ".join(f"{a}" if a == b else f"{a}–{b}" for a, b in seq_ranges(seqs)) or "none"


# -- 1. hashes ----------------------------------------------------------------------------------


def _check_hashes(files: dict[str, bytes], manifest: Manifest) -> CheckResult:
    failures = []
    for name, expected in manifest.files.items():
        if name not in files:
            failures.append(Finding(file=name, reason="missing from the bundle / 文件缺失"))
        elif (actual := sha256(files[name])) != expected:
            failures.append(
                Finding(file=name, record=expected, recomputed=actual, reason="SHA-256 differs from the manifest")
            )
    for name in sorted(set(files) - set(manifest.files) - {MANIFEST}):
        failures.append(Finding(file=name, reason="not listed in the manifest"))
    return CheckResult(
        name="hashes",
        passed=not failures,
        summary=f"{len(manifest.files)} files listed, {len(failures)} problem(s)",
        failures=failures,
    )


# -- 2. signatures ------------------------------------------------------------------------------


class _AgentData:
    """One agent's part of the bundle, parsed as far as it can be."""

    def __init__(self, agent: str) -> None:
        self.agent = agent
        self.keys: list[_Key] = []
        self.lines: list[BundleMessage] = []
        self.held: list[BundleMessage] = []
        self.record: dict[str, Any] | None = None
        self.good: dict[int, tuple[BundleMessage, AnySequenced]] = {}  # seq → verifiable message
        self.problems: list[Finding] = []  # files that could not be read


def _parse_agent(files: dict[str, bytes], agent: str) -> _AgentData:
    d = _AgentData(agent)
    try:
        d.keys = [_Key.model_validate(k) for k in json.loads(files.get(keys_path(agent), b"[]"))]
    except (ValueError, ValidationError) as e:
        d.problems.append(Finding(agent=agent, file=keys_path(agent), reason=f"unreadable: {e}"))
    for name, target in ((messages_path(agent), d.lines), (held_path(agent), d.held)):
        for n, line in enumerate(files.get(name, b"").decode("utf-8", "replace").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                target.append(BundleMessage.model_validate_json(line))
            except ValidationError as e:
                d.problems.append(Finding(agent=agent, file=f"{name}:{n}", reason=f"unreadable line: {e}"))
    try:
        d.record = json.loads(files[record_path(agent)])
    except (KeyError, ValueError) as e:
        d.problems.append(Finding(agent=agent, file=record_path(agent), reason=f"record missing or unreadable: {e}"))
    return d


def _signature_problem(
    d: _AgentData, line: BundleMessage, allow_unsigned: bool
) -> tuple[AnySequenced | None, str | None]:
    """The parsed message and None if it is verifiable, else why not."""
    try:
        m = parse_sequenced(line.payload)
    except ValidationError as e:
        return None, f"payload is not a valid contract message: {e.errors(include_url=False)[0]['msg']}"
    if m.agent_id != d.agent or m.seq != line.seq or m.kind != line.kind:
        return (
            m,
            f"payload says agent {m.agent_id} seq {m.seq} {m.kind}, the bundle lists it as {d.agent} seq {line.seq}",
        )
    if m.sig is None and m.key_id is None:
        return m, None if allow_unsigned else "unsigned: nothing proves where its numbers come from"
    if m.sig is None or m.key_id is None:
        return m, "malformed signature: key_id and sig must be present together"
    key = next((k for k in d.keys if k.key_id == m.key_id), None)
    if key is None:
        return m, f"not verifiable: key {m.key_id} is not enrolled for agent {d.agent}"
    try:
        raw = decode_public_key(key.public_key)
    except ValueError as e:
        return m, f"key {m.key_id}: {e}"
    if key_id(raw) != key.key_id:
        return m, f"key {key.key_id}: the public key's id is {key_id(raw)}"
    if not verify(raw, m):
        return m, f"signature invalid for key {m.key_id}"
    if key.revoked_at is not None and m.produced_at >= key.revoked_at:
        return m, f"key {m.key_id} revoked from {key.revoked_at.isoformat()}; produced at {m.produced_at.isoformat()}"
    return m, None


def _check_signatures(agents: list[_AgentData], allow_unsigned: bool) -> CheckResult:
    failures: list[Finding] = []
    notes: list[Finding] = []
    total = verified = unsigned = 0
    for d in agents:
        failures.extend(d.problems)
        seen: set[int] = set()
        for line in d.lines:
            total += 1
            m, problem = _signature_problem(d, line, allow_unsigned)
            if line.seq in seen:
                problem = f"seq {line.seq} listed twice"
            seen.add(line.seq)
            if problem is not None or m is None:
                failures.append(Finding(agent=d.agent, seq=line.seq, kind=line.kind, reason=problem or "unreadable"))
                continue
            d.good[line.seq] = (line, m)
            if m.sig is None:
                unsigned += 1
                notes.append(Finding(agent=d.agent, seq=line.seq, kind=line.kind, reason="unsigned, allowed"))
            else:
                verified += 1
        for h in d.held:
            notes.append(
                Finding(agent=d.agent, seq=h.seq, kind=h.kind, reason=f"held {h.status}, not used: {h.reason}")
            )
    summary = f"{verified} of {total} messages verified"
    if unsigned:
        summary += f", {unsigned} unsigned (allowed)"
    if failures:
        summary += f", {len(failures)} not verifiable"
    return CheckResult(name="signatures", passed=not failures, summary=summary, failures=failures, notes=notes)


# -- 3. coverage --------------------------------------------------------------------------------


def _gap_reason(s: int, evicted: dict[int, int], held: dict[int, BundleMessage], listed: set[int]) -> str:
    if s in listed:
        return "listed in the bundle but not verifiable (see signatures)"
    if s in evicted:
        return f"declared evicted by seq {evicted[s]}"
    if s in held:
        return f"held {held[s].status}, not used: {held[s].reason}"
    return "missing, no eviction declaration"


def _check_coverage(agents: list[_AgentData]) -> CheckResult:
    failures: list[Finding] = []
    notes: list[Finding] = []
    parts = []
    for d in agents:
        present = set(d.good)
        highest = max(present) if present else None
        evicted: dict[int, int] = {}  # seq → declaring seq
        for _line, m in d.good.values():
            if isinstance(m, EvictionDeclaration):
                for first, last in m.ranges:
                    for s in range(first, last + 1):
                        evicted.setdefault(s, m.seq)
        held = {h.seq: h for h in d.held}
        listed = {line.seq for line in d.lines}
        missing = set(range(1, (highest or 0) + 1)) - present
        gaps = seq_ranges(missing)

        segments: list[tuple[int, int, str]] = []  # consecutive numbers with the same explanation
        for s in sorted(missing):
            why = _gap_reason(s, evicted, held, listed)
            if segments and segments[-1][1] == s - 1 and segments[-1][2] == why:
                segments[-1] = (segments[-1][0], s, segments[-1][2])
            else:
                segments.append((s, s, why))
        texts = []
        for first, last, why in segments:
            span = f"{first}" if first == last else f"{first}–{last}"
            texts.append(f"{span} {why.split(':')[0]}")
            notes.append(Finding(agent=d.agent, seq=first, reason=f"gap seq {span}: {why}"))
        parts.append(f"{d.agent}: seq {ranges_text(present)} present" + (f"; gaps {'; '.join(texts)}" if texts else ""))
        if d.record is None:
            failures.append(Finding(agent=d.agent, reason="no record to compare the coverage with"))
            continue
        dq = d.record.get("data_quality", {})
        stated = [(int(g["first"]), int(g["last"])) for g in dq.get("sequence_gaps", [])]
        if dq.get("highest_seq") != highest:
            failures.append(
                Finding(
                    agent=d.agent,
                    path="data_quality.highest_seq",
                    record=dq.get("highest_seq"),
                    recomputed=highest,
                    reason="the record's highest seq is not the highest verifiable message",
                )
            )
        for first, last in sorted(set(gaps) ^ set(stated)):
            in_record = (first, last) in stated
            failures.append(
                Finding(
                    agent=d.agent,
                    seq=first,
                    path="data_quality.sequence_gaps",
                    record=[first, last] if in_record else None,
                    recomputed=None if in_record else [first, last],
                    reason=(
                        f"the record states gap {ranges_text({first, last})}, but the bundle holds verifiable "
                        "messages there"
                        if in_record
                        else f"seq {ranges_text({first, last})}: no verifiable message in the bundle, but the record "
                        "counts it"
                    ),
                )
            )
    return CheckResult(name="coverage", passed=not failures, summary=" | ".join(parts), failures=failures, notes=notes)


# -- 4. recompute -------------------------------------------------------------------------------


def _list_key(*lists: list[Any]) -> str | None:
    """The field that names the items of each list uniquely, if one does (else items match by index)."""
    for key in ("key", "machine_id", "process"):
        if all(_names_uniquely(items, key) for items in lists) and any(lists):
            return key
    return None


def _names_uniquely(items: list[Any], key: str) -> bool:
    if not all(isinstance(i, dict) and i.get(key) is not None for i in items):
        return False
    return len({str(i[key]) for i in items}) == len(items)


def diff(record: Any, recomputed: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """(path, record value, recomputed value) of every field that differs; EXCLUDED_FIELDS left out.

    Lists of indicators and machines are matched by `key` / `machine_id`, so a path reads
    `indicators.networking_rate.post.value` or `machines.M1.post.oee.value`.
    """
    if path in EXCLUDED_FIELDS:
        return []
    out: list[tuple[str, Any, Any]] = []
    if isinstance(record, dict) and isinstance(recomputed, dict):
        for k in [*recomputed, *(k for k in record if k not in recomputed)]:
            p = f"{path}.{k}" if path else str(k)
            if k not in record or k not in recomputed:
                if p not in EXCLUDED_FIELDS:
                    out.append((p, record.get(k, "<absent>"), recomputed.get(k, "<absent>")))
            else:
                out.extend(diff(record[k], recomputed[k], p))
        return out
    if isinstance(record, list) and isinstance(recomputed, list):
        key = _list_key(record, recomputed)
        if key is not None:
            a = {i[key]: i for i in record}
            b = {i[key]: i for i in recomputed}
            return diff(a, b, path)
        if len(record) != len(recomputed):
            return [(path, record, recomputed)]
        for n, (x, y) in enumerate(zip(record, recomputed, strict=True)):
            out.extend(diff(x, y, f"{path}[{n}]"))
        return out
    if record != recomputed or isinstance(record, bool) != isinstance(recomputed, bool):
        out.append((path, record, recomputed))
    return out


def _feeders(store: Store, d: _AgentData, report: EvidenceReport, path: str) -> str:
    """Which messages feed a field of the record, for a person to look up."""
    agent = d.agent
    parts = path.split(".")
    declared = f"{DECLARED}: the figures declared from manual records"
    if parts[0].split("[")[0] == "imported":
        return declared
    if parts[-1] == "change_from_imported":  # post (measured) − the imported baseline
        return f"{declared}; {_feeders(store, d, report, '.'.join([*parts[:-1], 'post', 'value']))}"
    windows = {"baseline": report.baseline, "post": report.post}
    left_out = []  # KPI messages of the bundle that could not be verified, so were not used
    for line in d.lines:
        if line.seq not in d.good:
            try:
                m = parse_sequenced(line.payload)
            except ValidationError:
                continue
            if isinstance(m, MachineKpi):
                left_out.append(m)

    def kpi_seqs(window: str, machine: str | None = None) -> str:
        w = windows[window]
        rows = [
            r
            for r in store.kpi_rows(agent, w.start, w.end)
            if r.bucket_start >= w.start and r.bucket_end <= w.end and (machine is None or r.machine_id == machine)
        ]
        what = f"machine {machine}" if machine else "all machines"
        text = f"{agent} kpi seq {ranges_text({r.seq for r in rows})} ({what}, {window} window)"
        unused = {
            m.seq
            for m in left_out
            if m.bucket_start >= w.start and m.bucket_end <= w.end and (machine is None or m.machine_id == machine)
        }
        if unused:
            text += f"; not verifiable, left out: kpi seq {ranges_text(unused)}"
        return text

    def register(window: str) -> str:
        w = windows[window]
        site = store.latest_site(agent, w.start, w.end)
        if site is not None:
            return f"{agent} site seq {site.seq} (asset register, {window} window)"
        birth = store.latest_birth(agent, produced_before=w.end) or store.latest_birth(agent)
        return f"{agent} birth seq {birth.seq} (asset register)" if birth else f"{agent}: no register"

    if parts[0] == "indicators" and len(parts) >= 3:
        key, side = parts[1], parts[2]
        sides = [side] if side in windows else list(windows)
        out = []
        for s in sides:
            if key in SITE_KEYS:
                out.append(register(s))
            if key in OEE_KEYS or (key in SITE_KEYS and key != "digitalisation_rate"):
                out.append(kpi_seqs(s))
        return "; ".join(out)
    if parts[0] == "machines" and len(parts) >= 3 and parts[2] in windows:
        return kpi_seqs(parts[2], parts[1]) + "; " + register(parts[2])
    if parts[0] == "machines":
        birth = store.latest_birth(agent)
        return f"{agent} birth seq {birth.seq}" if birth else f"{agent}: no birth message"
    if parts[0] == "data_quality":
        return f"{agent} every message, seq {ranges_text(store.sequence_numbers(agent))}"
    if parts[0] in ("agent_version", "site"):
        birth = store.latest_birth(agent)
        return f"{agent} birth seq {birth.seq}" if birth else f"{agent}: no birth message"
    return "the project in the manifest"


def _check_recompute(agents: list[_AgentData], manifest: Manifest, files: dict[str, bytes]) -> CheckResult:
    failures: list[Finding] = []
    notes: list[Finding] = []
    compared = 0
    try:  # bundles written before declared figures existed have none
        imported = read_declared(files[DECLARED]) if DECLARED in files else []
    except ValueError as e:
        failures.append(Finding(file=DECLARED, reason=f"unreadable: {e}"))
        imported = []
    with tempfile.TemporaryDirectory(prefix="edgeproof-verify-") as tmp, Store(Path(tmp) / "recompute.sqlite") as store:
        for d in agents:
            for k in d.keys:
                try:
                    store.enroll_key(d.agent, k.public_key, at=k.enrolled_at)
                    if k.revoked_at is not None:
                        store.revoke_key(d.agent, k.key_id, k.revoked_at)
                except (ValueError, KeyError) as e:
                    notes.append(Finding(agent=d.agent, reason=f"key {k.key_id} not enrolled for the recompute: {e}"))
            for line in d.lines:
                if line.seq not in d.good:
                    notes.append(
                        Finding(agent=d.agent, seq=line.seq, kind=line.kind, reason="not verifiable, not used")
                    )
                    continue
                result = store.ingest(line.topic, line.payload.encode("utf-8"), line.received_at)
                if result != "stored":
                    notes.append(Finding(agent=d.agent, seq=line.seq, kind=line.kind, reason=f"not used: {result}"))
        try:
            reports = {r.agent_id: r for r in build_project_reports(store, manifest.project, imported=imported)}
        except (ReportError, UnknownAgent) as e:
            return CheckResult(
                name="recompute",
                passed=False,
                summary="the record cannot be rebuilt",
                failures=[Finding(reason=f"the record cannot be rebuilt from the verifiable messages: {e}")],
                notes=notes,
            )
        for d in agents:
            report = reports.get(d.agent)
            if d.record is None or report is None:
                failures.append(Finding(agent=d.agent, file=record_path(d.agent), reason="no record to compare"))
                continue
            rebuilt = json.loads(report.model_dump_json())
            compared += 1
            for path, was, now in diff(d.record, rebuilt):
                failures.append(
                    Finding(
                        agent=d.agent,
                        file=record_path(d.agent),
                        path=path,
                        record=was,
                        recomputed=now,
                        messages=_feeders(store, d, report, path),
                        reason="the record differs from the recomputation",
                    )
                )
    summary = f"{compared} record(s) rebuilt from the signed messages and compared field by field"
    summary += f", {len(failures)} difference(s)" if failures else ", all equal"
    return CheckResult(name="recompute", passed=not failures, summary=summary, failures=failures, notes=notes)


# -- entry point --------------------------------------------------------------------------------


class BundleError(ValueError):
    """The bundle cannot be read at all (not a zip or folder, no manifest); str() is ready for a user."""


def verify_bundle(path: str | Path, allow_unsigned: bool = False) -> VerifyResult:
    """Run the four checks on a bundle; raises BundleError when it cannot be read at all."""
    try:
        files = read_bundle(path)
    except (OSError, ValueError) as e:
        raise BundleError(f"cannot read the bundle {path}: {e}") from None
    if MANIFEST not in files:
        raise BundleError(f"{path}: no {MANIFEST} in the bundle")
    try:
        manifest = Manifest.model_validate_json(files[MANIFEST])
    except ValidationError as e:
        raise BundleError(f"{path}: {MANIFEST} is not a bundle manifest: {e}") from None
    agents = [_parse_agent(files, a) for a in manifest.agents]
    checks = [
        _check_hashes(files, manifest),
        _check_signatures(agents, allow_unsigned),
        _check_coverage(agents),
        _check_recompute(agents, manifest, files),
    ]
    keys = []
    for d in agents:
        for k in d.keys:
            try:
                fp = fingerprint(decode_public_key(k.public_key))
            except ValueError:
                fp = "(not a public key)"
            keys.append(
                KeyInfo(
                    agent=d.agent, key_id=k.key_id, fingerprint=fp, enrolled_at=k.enrolled_at, revoked_at=k.revoked_at
                )
            )
    return VerifyResult(
        bundle=str(path),
        project=manifest.project.id,
        agents=manifest.agents,
        passed=all(c.passed for c in checks),
        keys=keys,
        checks=checks,
    )


def _value(v: Any) -> str:
    return json.dumps(v, ensure_ascii=False)


def _finding_text(f: Finding) -> str:
    where = " ".join(
        x
        for x in (
            f"agent {f.agent}" if f.agent else "",
            f"seq {f.seq}" if f.seq is not None else "",
            f"({f.kind})" if f.kind else "",
            f"file {f.file}" if f.file and not f.path else "",
            f.path or "",
        )
        if x
    )
    text = f"{where}: {f.reason}" if where else f.reason
    if f.path is not None:
        text += f"; 记录值 record {_value(f.record)}, 重算值 recomputed {_value(f.recomputed)}"
    elif f.record is not None or f.recomputed is not None:
        text += f"; expected {f.record}, actual {f.recomputed}"
    if f.messages:
        text += f"\n        来源消息 messages: {f.messages}"
    return text


def format_result(result: VerifyResult, limit: int = 30) -> str:
    """The bilingual summary `edgeproof verify` prints."""
    lines = [
        f"证据包校验 Evidence bundle verification: {result.bundle}",
        f"项目 Project: {result.project}    采集端 Agents: {', '.join(result.agents)}",
        "公钥 Enrolled keys (compare each fingerprint with `edgeproof agent --show-key` on the agent):",
    ]
    for k in result.keys:
        revoked = f", revoked from {k.revoked_at.isoformat()}" if k.revoked_at else ""
        lines.append(f"  {k.agent}  {k.key_id}  {k.fingerprint}{revoked}")
    for n, c in enumerate(result.checks, start=1):
        zh, en = LABELS[c.name]
        mark = "通过 PASS" if c.passed else "未通过 FAIL"
        lines.append(f"[{mark}] {n}. {zh} {en}: {c.summary}")
        for f in c.failures[:limit]:
            lines.append(f"    - {_finding_text(f)}")
        if len(c.failures) > limit:
            lines.append(f"    … {len(c.failures) - limit} more (--json lists all)")
        if c.name == "coverage":
            lines.extend(f"    · {_finding_text(f)}" for f in c.notes[:limit])
    lines.append(
        "不参与比对的字段 Fields not compared (not reproducible from signed messages): "
        + ", ".join(result.excluded_fields)
    )
    if result.passed:
        lines.append(
            "结论 Result: 通过 PASS — 每项指标均可由已签名消息重算得到 every number is reproduced from signed messages"
        )
    else:
        failed = ", ".join(f"{LABELS[c.name][0]} {LABELS[c.name][1]}" for c in result.checks if not c.passed)
        lines.append(f"结论 Result: 未通过 FAIL — {failed}")
    return "\n".join(lines)


__all__ = [
    "EXCLUDED_FIELDS",
    "BundleError",
    "CheckResult",
    "Finding",
    "KeyInfo",
    "VerifyResult",
    "diff",
    "format_result",
    "seq_ranges",
    "verify_bundle",
]
