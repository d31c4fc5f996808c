"""Browse paths to NodeIds on one session: children are browsed level by level, batched, and cached.

A path is '/'-separated browse names from a start node; 'N:Name' pins namespace index N, a bare 'Name'
matches a child of that name in any namespace (namespace indexes can change when a server restarts).
"""

from __future__ import annotations

from dataclasses import dataclass

from asyncua import ua
from asyncua.client.ua_client import UaClient

OBJECTS = ua.NodeId(ua.ObjectIds.ObjectsFolder)


@dataclass(frozen=True, slots=True)
class Step:
    namespace: int | None  # None: any namespace
    name: str

    def __str__(self) -> str:
        return self.name if self.namespace is None else f"{self.namespace}:{self.name}"


def parse_path(path: str) -> list[Step]:
    steps = []
    for part in path.strip("/").split("/"):
        ns, sep, name = part.partition(":")
        steps.append(Step(int(ns), name) if sep and ns.isdigit() else Step(None, part))
    return steps


Children = list[tuple[ua.QualifiedName, ua.NodeId]]


class Resolver:
    """Resolves paths on one session; a new session (server restart) needs a new Resolver."""

    def __init__(self, session: UaClient, max_nodes_per_browse: int) -> None:
        self._session = session
        self._batch = max_nodes_per_browse
        self._children: dict[ua.NodeId, Children] = {}

    async def resolve(self, paths: list[list[Step]], start: ua.NodeId = OBJECTS) -> list[ua.NodeId | str]:
        """For each path its NodeId, or the reason it does not resolve."""
        out: list[ua.NodeId | str] = [start] * len(paths)
        for depth in range(max((len(p) for p in paths), default=0)):
            pending = [i for i, p in enumerate(paths) if depth < len(p) and isinstance(out[i], ua.NodeId)]
            await self._browse([out[i] for i in pending])  # type: ignore[misc]
            for i in pending:
                out[i] = self._child(out[i], paths[i], depth)  # type: ignore[arg-type]
        return out

    def _child(self, parent: ua.NodeId, path: list[Step], depth: int) -> ua.NodeId | str:
        step = path[depth]
        where = "/".join(str(s) for s in path[:depth]) or "the start node"
        matches = [
            node
            for name, node in self._children[parent]
            if name.Name == step.name and step.namespace in (None, name.NamespaceIndex)
        ]
        if not matches:
            return f"path not found: no {str(step)!r} under {where}"
        if len(matches) > 1:
            return f"path ambiguous: several {step.name!r} under {where}; pin the namespace as 'N:{step.name}'"
        return matches[0]

    async def _browse(self, parents: list[ua.NodeId]) -> None:
        todo = list(dict.fromkeys(p for p in parents if p not in self._children))
        for start in range(0, len(todo), self._batch):
            chunk = todo[start : start + self._batch]
            params = ua.BrowseParameters()
            params.NodesToBrowse = [_description(node) for node in chunk]
            results = await self._session.browse(params)
            for node, result in zip(chunk, results, strict=True):
                self._children[node] = await self._collect(result)

    async def _collect(self, result: ua.BrowseResult) -> Children:
        children: Children = []
        while True:
            if not result.StatusCode.is_good():  # e.g. BadNodeIdUnknown: the parent has no children to offer
                return children
            children += [(r.BrowseName, _local(r.NodeId)) for r in result.References]
            if not result.ContinuationPoint:
                return children
            params = ua.BrowseNextParameters()
            params.ContinuationPoints = [result.ContinuationPoint]
            result = (await self._session.browse_next(params))[0]


def _local(node: ua.ExpandedNodeId) -> ua.NodeId:
    return ua.NodeId(node.Identifier, node.NamespaceIndex, node.NodeIdType)


def _description(node: ua.NodeId) -> ua.BrowseDescription:
    d = ua.BrowseDescription()
    d.NodeId = node
    d.BrowseDirection = ua.BrowseDirection.Forward
    d.ReferenceTypeId = ua.NodeId(ua.ObjectIds.HierarchicalReferences)
    d.IncludeSubtypes = True
    d.NodeClassMask = 0  # every node class
    d.ResultMask = ua.BrowseResultMask.BrowseName
    return d
