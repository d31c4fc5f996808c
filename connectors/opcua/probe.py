"""`edgeproof probe opcua`: browse an OPC UA server's address space and draft the device's tags.

For commissioning: shows what a machine exposes (node ids, browse paths, types, live values) and
turns the variables of interest into an `OpcUaDeviceConfig` snippet to paste under `devices:`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import os
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, get_args

import yaml
from asyncua import Client, ua
from pydantic import ValidationError

from connectors.opcua.config import OpcUaSecurity, SecurityMode, SecurityPolicy
from connectors.opcua.pki import ServerCertificateRejected
from connectors.opcua.resolve import OBJECTS, Resolver, Step, parse_path
from connectors.opcua.security import secure_client

SERVER = ua.NodeId(ua.ObjectIds.Server)
BROWSE_BATCH = 100  # nodes per Browse request
READ_BATCH = 500  # attributes per Read request
VALUE_WIDTH = 48  # characters of a value shown in the table

_NODE_ID = re.compile(r"^(ns=\d+;)?[isgb]=")
_CERTIFICATE_REFUSALS = {"BadSecurityChecksFailed", "BadSecurityPolicyRejected", "BadNoValidCertificates"}
_USER_REFUSALS = {"BadUserAccessDenied", "BadIdentityTokenInvalid", "BadIdentityTokenRejected"}


class ProbeError(Exception):
    """A failure to report to the user in one line (exit status 1)."""


@dataclass(eq=False)
class ProbedNode:
    node_id: ua.NodeId
    browse_name: ua.QualifiedName
    node_class: ua.NodeClass
    depth: int
    path: tuple[ua.QualifiedName, ...] | None  # from Objects; None when the node is not below Objects
    parent: ProbedNode | None = None
    children: list[ProbedNode] = field(default_factory=list)
    data_type: str | None = None
    value: Any = None
    status: str | None = None

    @property
    def path_text(self) -> str | None:
        return None if self.path is None else "/".join(q.to_string() for q in self.path)

    @property
    def is_variable(self) -> bool:
        return self.node_class == ua.NodeClass.Variable


@dataclass
class Browse:
    nodes: list[ProbedNode]  # the start node first, then depth-first in browse order (as printed)
    truncated: bool  # stopped at --max-nodes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", required=True, help="server endpoint, opc.tcp://host:port/...")
    parser.add_argument("--security-mode", choices=get_args(SecurityMode), default="None")
    parser.add_argument("--security-policy", choices=get_args(SecurityPolicy), default="Basic256Sha256")
    parser.add_argument("--username")
    parser.add_argument("--password-env", metavar="VAR", help="environment variable holding the password")
    parser.add_argument("--pki-dir", type=Path, help="PKI folder (own/, trusted/, rejected/); default var/pki")
    parser.add_argument("--start", default="Objects", help="node id or browse path from Objects (default Objects)")
    parser.add_argument("--depth", type=int, default=3, help="levels below --start to browse (default 3)")
    parser.add_argument("--max-nodes", type=int, default=2000, help="stop browsing after this many nodes")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds, for connecting and per request")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="one JSON object per node")
    output.add_argument("--emit-config", action="store_true", help="print a YAML device snippet for the variables")
    parser.add_argument("--select", nargs="+", metavar="NODE_OR_PATH", help="with --emit-config: only these")
    parser.add_argument("--by-path", action="store_true", help="with --emit-config: tags by path, not node id")
    parser.add_argument("--device-id", help="with --emit-config: the device id (default from the URL)")


# --- node ids and browse paths ------------------------------------------------------------


def is_node_id(text: str) -> bool:
    return bool(_NODE_ID.match(text))


def step_matches(step: Step, name: ua.QualifiedName) -> bool:
    return step.name == name.Name and step.namespace in (None, name.NamespaceIndex)


# --- requests -------------------------------------------------------------------------------


async def _browse(
    client: Client, node_ids: Sequence[ua.NodeId], direction: ua.BrowseDirection = ua.BrowseDirection.Forward
) -> list[list[ua.ReferenceDescription]]:
    """Hierarchical references of many nodes, BROWSE_BATCH per request; a node that cannot be browsed has none."""
    out: list[list[ua.ReferenceDescription]] = []
    for i in range(0, len(node_ids), BROWSE_BATCH):
        params = ua.BrowseParameters()
        params.View = ua.ViewDescription()
        params.NodesToBrowse = [
            ua.BrowseDescription(
                NodeId=n,
                BrowseDirection=direction,
                ReferenceTypeId=ua.NodeId(ua.ObjectIds.HierarchicalReferences),
                IncludeSubtypes=True,
                ResultMask=ua.BrowseResultMask.All,
            )
            for n in node_ids[i : i + BROWSE_BATCH]
        ]
        for result in await client.uaclient.browse(params):
            refs = list(result.References or []) if result.StatusCode.is_good() else []
            point = result.ContinuationPoint
            while point:
                more = await client.uaclient.browse_next(ua.BrowseNextParameters(ContinuationPoints=[point]))
                refs.extend(more[0].References or [])
                point = more[0].ContinuationPoint
            out.append(refs)
    return out


async def _read(client: Client, reads: Sequence[tuple[ua.NodeId, ua.AttributeIds]]) -> list[ua.DataValue]:
    out: list[ua.DataValue] = []
    for i in range(0, len(reads), READ_BATCH):
        params = ua.ReadParameters()
        params.NodesToRead = [ua.ReadValueId(NodeId=n, AttributeId=a) for n, a in reads[i : i + READ_BATCH]]
        out.extend(await client.uaclient.read(params))
    return out


async def path_from_objects(
    client: Client, node_id: ua.NodeId, name: ua.QualifiedName
) -> tuple[ua.QualifiedName, ...] | None:
    """Up the first parents to Objects; None when the node is not below it (e.g. under Types)."""
    if node_id == OBJECTS:
        return ()
    path, current = [name], node_id
    for _ in range(32):  # address spaces are shallow; a loop of references must not hang the probe
        (parents,) = await _browse(client, [current], ua.BrowseDirection.Inverse)
        if not parents:
            return None
        current = parents[0].NodeId
        if current == OBJECTS:
            return tuple(reversed(path))
        path.append(parents[0].BrowseName)
    return None


# --- the walk -------------------------------------------------------------------------------


async def _start_node(client: Client, start: str) -> ProbedNode:
    if is_node_id(start):
        node_id = ua.NodeId.from_string(start)
    elif start == "Objects":
        node_id = OBJECTS
    else:
        (found,) = await Resolver(client.uaclient, BROWSE_BATCH).resolve([parse_path(start)])
        if isinstance(found, str):
            raise ProbeError(f"--start {start}: {found}")
        node_id = found
    name, node_class = await _read(
        client, [(node_id, ua.AttributeIds.BrowseName), (node_id, ua.AttributeIds.NodeClass)]
    )
    if not name.StatusCode.is_good():
        raise ProbeError(f"--start {start}: {name.StatusCode.name}")
    path = await path_from_objects(client, node_id, name.Value.Value)
    return ProbedNode(node_id, name.Value.Value, ua.NodeClass(node_class.Value.Value), 0, path)


async def browse_tree(client: Client, start: str, depth: int, max_nodes: int) -> Browse:
    """Breadth-first to `depth` levels below `start` (the standard Server object left out), values read in batches."""
    root = await _start_node(client, start)
    found, seen, frontier, truncated = [root], {root.node_id}, [root], False
    for level in range(1, depth + 1):
        if not frontier or truncated:
            break
        next_frontier: list[ProbedNode] = []
        for parent, refs in zip(frontier, await _browse(client, [n.node_id for n in frontier]), strict=True):
            for ref in refs:
                node_id = ref.NodeId
                if node_id in seen or node_id == SERVER:
                    continue
                if len(found) >= max_nodes:
                    truncated = True
                    break
                seen.add(node_id)
                path = None if parent.path is None else (*parent.path, ref.BrowseName)
                child = ProbedNode(node_id, ref.BrowseName, ref.NodeClass, level, path, parent)
                parent.children.append(child)
                found.append(child)
                next_frontier.append(child)
        frontier = next_frontier
    await _read_variables(client, [n for n in found if n.is_variable])
    return Browse(list(_depth_first(root)), truncated)


def _depth_first(node: ProbedNode) -> Iterator[ProbedNode]:
    yield node
    for child in node.children:
        yield from _depth_first(child)


async def _read_variables(client: Client, variables: list[ProbedNode]) -> None:
    reads = [(v.node_id, a) for v in variables for a in (ua.AttributeIds.Value, ua.AttributeIds.DataType)]
    results = await _read(client, reads)
    type_ids = {
        dt.Value.Value for dt in results[1::2] if dt.StatusCode.is_good() and isinstance(dt.Value.Value, ua.NodeId)
    }
    type_names = await _type_names(client, type_ids)
    for v, value, data_type in zip(variables, results[0::2], results[1::2], strict=True):
        if data_type.StatusCode.is_good():
            v.data_type = type_names.get(data_type.Value.Value)
        v.status = value.StatusCode.name
        if not value.StatusCode.is_bad():
            v.value = value.Value.Value if value.Value is not None else None


async def _type_names(client: Client, type_ids: set[ua.NodeId]) -> dict[ua.NodeId, str]:
    """Standard types by their well-known names; a server's own types by their browse names, in one Read."""
    names = {
        t: ua.ObjectIdNames[t.Identifier]
        for t in type_ids
        if t.NamespaceIndex == 0 and t.Identifier in ua.ObjectIdNames
    }
    custom = [t for t in type_ids if t not in names]
    for t, dv in zip(custom, await _read(client, [(t, ua.AttributeIds.BrowseName) for t in custom]), strict=True):
        names[t] = dv.Value.Value.Name if dv.StatusCode.is_good() else t.to_string()
    return names


# --- output ---------------------------------------------------------------------------------


def jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, ua.LocalizedText):
        return value.Text
    if isinstance(value, ua.NodeId | ua.QualifiedName):
        return value.to_string()
    return str(value)


def shown_value(node: ProbedNode) -> str:
    """A variable's value for the table: its status name when bad, marked when uncertain."""
    if not node.is_variable:
        return ""
    if node.status is not None and node.status.startswith("Bad"):
        return node.status
    value = jsonable(node.value)
    if isinstance(value, list) and len(value) > 4:
        text = json.dumps(value[:4], ensure_ascii=False)[:-1] + f", … {len(value)} items]"
    elif isinstance(value, str) and not isinstance(node.value, str):
        text = value  # a structure, as asyncua prints it
    else:
        text = json.dumps(value, ensure_ascii=False)
    if len(text) > VALUE_WIDTH:
        text = text[: VALUE_WIDTH - 1] + "…"
    return text if node.status == "Good" else f"{text} ({node.status})"


def table(nodes: list[ProbedNode]) -> list[str]:
    """Aligned lines: the tree of browse names, then class, data type, value, node id, path."""
    header = ("browse name", "class", "data type", "value", "node id", "path")
    rows = [header] + [
        (
            "  " * n.depth + n.browse_name.to_string(),
            n.node_class.name,
            n.data_type or "",
            shown_value(n),
            n.node_id.to_string(),
            n.path_text if n.path_text is not None else "-",
        )
        for n in nodes
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1] for r in rows]


def json_line(node: ProbedNode) -> str:
    return json.dumps(
        {
            "node_id": node.node_id.to_string(),
            "path": node.path_text,
            "browse_name": node.browse_name.to_string(),
            "node_class": node.node_class.name,
            "depth": node.depth,
            "data_type": node.data_type,
            "value": jsonable(node.value),
            "status": node.status,
        },
        ensure_ascii=False,
    )


# --- configuration snippet ------------------------------------------------------------------


def snake_case(name: str) -> str:
    words = re.sub(r"([a-z0-9])([A-Z])|([A-Z])([A-Z][a-z])", r"\1\3_\2\4", name)
    return re.sub(r"\W+", "_", words).strip("_").lower() or "tag"


def tag_names(variables: list[ProbedNode]) -> list[str]:
    """snake_case browse names; where two collide, parents' names are prefixed until they differ, then _2, _3."""
    chains = []
    for v in variables:
        chain, node = [], v
        while node is not None and node.depth > 0:
            chain.insert(0, snake_case(node.browse_name.Name))
            node = node.parent
        chains.append(chain or [snake_case(v.browse_name.Name)])
    lengths = [1] * len(variables)
    while True:
        names = ["_".join(c[-k:]) for c, k in zip(chains, lengths, strict=True)]
        longer = [i for i, n in enumerate(names) if names.count(n) > 1 and lengths[i] < len(chains[i])]
        if not longer:
            break
        for i in longer:
            lengths[i] += 1
    unique: list[str] = []
    for n in names:
        candidate, k = n, 1
        while candidate in unique:
            k += 1
            candidate = f"{n}_{k}"
        unique.append(candidate)
    return unique


def select(nodes: list[ProbedNode], wanted: list[str] | None) -> list[ProbedNode]:
    """The variables to make tags of: all, or those named (a selected object stands for its variables)."""
    if not wanted:
        return [n for n in nodes if n.is_variable]
    chosen: list[ProbedNode] = []
    for item in wanted:
        matches = [n for n in nodes if _names(item, n)]
        if not matches:
            raise ProbeError(f"--select {item}: not among the browsed nodes (check --start and --depth)")
        for m in matches:
            chosen.extend(n for n in _depth_first(m) if n.is_variable and n not in chosen)
    if not chosen:
        raise ProbeError("--select names no variables")
    return chosen


def _names(item: str, node: ProbedNode) -> bool:
    if is_node_id(item):
        return ua.NodeId.from_string(item) == node.node_id
    steps = parse_path(item)
    return (
        node.path is not None
        and len(steps) == len(node.path)
        and all(step_matches(s, q) for s, q in zip(steps, node.path, strict=True))
    )


def default_device_id(url: str) -> str:
    host_port = re.sub(r"^opc\.tcp://", "", url).split("/")[0]
    return "opcua-" + re.sub(r"[^A-Za-z0-9]+", "-", host_port).strip("-")


def device_snippet(variables: list[ProbedNode], args: argparse.Namespace) -> str:
    """YAML of an OpcUaDeviceConfig; the password appears only as a ${VAR} placeholder."""
    device: dict[str, Any] = {"id": args.device_id or default_device_id(args.url), "protocol": "opcua", "url": args.url}
    if args.timeout != 2.0:
        device["timeout_s"] = args.timeout
    security: dict[str, Any] = {}
    if args.security_mode != "None":
        security.update(mode=args.security_mode, policy=args.security_policy)
    if args.username:
        security["username"] = args.username
    if args.password_env:
        security["password"] = f"${{{args.password_env}}}"
    if security and args.pki_dir:
        security["pki_dir"] = str(args.pki_dir)
    if security:
        device["security"] = security
    device["tags"] = [
        {"name": name, "path": v.path_text}
        if args.by_path and v.path is not None and not any("/" in q.Name for q in v.path)
        else {"name": name, "node": v.node_id.to_string()}
        for name, v in zip(tag_names(variables), variables, strict=True)
    ]
    head = f"# edgeproof probe opcua: {len(variables)} tags from {args.url}; paste as an entry under devices:\n"
    return head + yaml.safe_dump(device, sort_keys=False, allow_unicode=True, default_flow_style=None, width=1000)


# --- command --------------------------------------------------------------------------------


def _connect_failure(url: str, e: Exception, timeout: float) -> ProbeError:
    if isinstance(e, ua.UaStatusCodeError):
        status = ua.StatusCode(e.code).name
        if status.startswith("BadCertificate") or status in _CERTIFICATE_REFUSALS:
            return ProbeError(f"{url}: certificate rejected ({status}); check both trust lists (--pki-dir)")
        if status in _USER_REFUSALS:
            return ProbeError(f"{url}: user refused ({status}); check --username and --password-env")
        return ProbeError(f"{url}: server refused the session ({status})")
    if isinstance(e, TimeoutError):
        return ProbeError(f"{url}: no answer within {timeout:g} s")
    if isinstance(e, ServerCertificateRejected):
        return ProbeError(f"{url}: certificate rejected: {_reason(e)}")
    if isinstance(e, ConnectionRefusedError):
        return ProbeError(f"{url}: cannot connect: connection refused")
    return ProbeError(f"{url}: cannot connect: {e.strerror if isinstance(e, OSError) and e.strerror else _reason(e)}")


def _reason(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e).strip() else type(e).__name__


async def _probe(args: argparse.Namespace, security: OpcUaSecurity) -> int:
    client = Client(args.url, timeout=args.timeout)
    try:
        await secure_client(client, security, args.device_id or default_device_id(args.url))
        await client.connect()
    except (OSError, TimeoutError, ua.UaError) as e:
        raise _connect_failure(args.url, e, args.timeout) from e
    try:
        browse = await browse_tree(client, args.start, args.depth, args.max_nodes)
    except (OSError, TimeoutError, ua.UaError) as e:
        raise ProbeError(f"{args.url}: browsing failed: {_reason(e)}") from e
    finally:
        await client.disconnect()
    if browse.truncated:
        print(f"stopped at --max-nodes {args.max_nodes}; narrow with --start or --depth", file=sys.stderr)
    if args.emit_config:
        variables = select(browse.nodes, args.select)
        if not variables:
            raise ProbeError(f"no variables within --depth {args.depth} of {args.start}")
        print(device_snippet(variables, args), end="")
    elif args.json:
        for node in browse.nodes:
            print(json_line(node))
    else:
        print("\n".join(table(browse.nodes)))
    return 0


def _check_arguments(args: argparse.Namespace) -> None:
    """Raises ValueError with a message for the user."""
    if not args.url.startswith("opc.tcp://"):
        raise ValueError("--url must start with opc.tcp://")
    if args.depth < 0:
        raise ValueError("--depth must be 0 or more")
    if args.max_nodes < 1:
        raise ValueError("--max-nodes must be 1 or more")
    if args.timeout <= 0:
        raise ValueError("--timeout must be positive")
    if (args.select or args.by_path or args.device_id) and not args.emit_config:
        raise ValueError("--select, --by-path and --device-id go with --emit-config")
    for item in [args.start, *(args.select or [])]:
        if is_node_id(item):
            try:
                ua.NodeId.from_string(item)
            except Exception:  # asyncua raises several types for bad strings
                raise ValueError(f"not a node id: {item}") from None


def _security(args: argparse.Namespace) -> OpcUaSecurity:
    """From the arguments, the password from its environment variable; raises ValueError with a message."""
    password = None
    if args.password_env:
        password = os.environ.get(args.password_env)
        if password is None:
            raise ValueError(f"--password-env {args.password_env}: the variable is not set")
    settings: dict[str, Any] = {
        "mode": args.security_mode,
        "policy": args.security_policy,
        "username": args.username,
        "password": password,
    }
    if args.pki_dir:
        settings["pki_dir"] = args.pki_dir
    try:
        return OpcUaSecurity.model_validate(settings)
    except ValidationError as e:
        raise ValueError("; ".join(err["msg"].removeprefix("Value error, ") for err in e.errors())) from None


def run(args: argparse.Namespace) -> int:
    try:
        _check_arguments(args)
        security = _security(args)
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    # asyncua logs every failed step with a traceback; the probe reports a failure itself, in one line.
    asyncua_log = logging.getLogger("asyncua")
    level = asyncua_log.level
    asyncua_log.setLevel(logging.CRITICAL)
    try:
        return asyncio.run(_probe(args, security))
    except ProbeError as e:
        print(e, file=sys.stderr)
        return 1
    finally:
        asyncua_log.setLevel(level)
