"""Load a YAML file into a pydantic model, with errors that name the file, the line and the field.

`${NAME}` and `${NAME:-default}` in string values are replaced from the environment, so secrets
and per-host values stay out of the file. Unquoted clock times such as 06:00 stay text (YAML 1.2),
not the base-60 integers YAML 1.1 would make of them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import AfterValidator, BaseModel, ValidationError
from pydantic_core import PydanticCustomError

M = TypeVar("M", bound=BaseModel)
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _known_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise ValueError(f"unknown time zone {name!r}") from e
    return name


TimeZoneName = Annotated[str, AfterValidator(_known_zone)]
"""An IANA time zone name such as Asia/Shanghai, checked against the tz database."""


def located_error(loc: tuple[int | str, ...], message: str) -> PydanticCustomError:
    """An error for a model validator that knows which field is wrong (e.g. a dangling reference)."""
    return PydanticCustomError("reference", "{message}", {"message": message, "loc": loc})


class ConfigError(Exception):
    """A configuration file is unreadable or invalid; str() is ready to show to a user."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__("\n".join(f"{path}:{p}" for p in problems))


def _expand_env(text: str, path: Path, line: int) -> str:
    def sub(m: re.Match[str]) -> str:
        value = os.environ.get(m.group(1), m.group(2))
        if value is None:
            raise ConfigError(path, [f"{line}: environment variable {m.group(1)} is not set"])
        return value

    return _ENV.sub(sub, text)


def _to_python(node: yaml.Node, path: Path) -> Any:
    """Plain Python data from a composed YAML node (keeps YAML 1.1 scalar typing)."""
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _to_python(key_node, path)
            if key in out:
                raise ConfigError(path, [f"{key_node.start_mark.line + 1}: duplicate key {key!r}"])
            out[key] = _to_python(value_node, path)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(n, path) for n in node.value]
    assert isinstance(node, yaml.ScalarNode)
    if node.tag in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float") and ":" in node.value:
        # YAML 1.1 reads 06:00 as the base-60 integer 360; keep clock times as text (YAML 1.2 rule)
        return node.value
    if node.tag == "tag:yaml.org,2002:str" and "${" in node.value:
        node = yaml.ScalarNode(node.tag, _expand_env(node.value, path, node.start_mark.line + 1), node.start_mark)
    try:
        return yaml.SafeLoader(stream="").construct_object(node, deep=True)
    except ValueError as e:  # e.g. an impossible date such as 2026-13-03, which YAML types before pydantic sees it
        raise ConfigError(path, [f"{node.start_mark.line + 1}: {node.value!r} is not a valid value: {e}"]) from None


def _locate(root: yaml.Node | None, loc: tuple[int | str, ...]) -> tuple[int, tuple[int | str, ...]]:
    """1-based line of the deepest node along `loc`, and `loc` without the union tags pydantic adds."""
    node = root
    line = node.start_mark.line + 1 if node is not None else 1
    path: list[int | str] = []
    for i, part in enumerate(loc):
        if isinstance(node, yaml.MappingNode):
            keys = {k.value: v for k, v in node.value}
            if str(part) not in keys:
                following = loc[i + 1] if i + 1 < len(loc) else None
                if following is not None and str(following) in keys:
                    continue  # a discriminated-union tag such as "modbus_tcp": not in the file
                path.extend(loc[i:])
                return line, tuple(path)
            node = keys[str(part)]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            path.extend(loc[i:])
            return line, tuple(path)
        path.append(part)
        line = node.start_mark.line + 1
    return line, tuple(path)


def _field_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(document)"


def load_yaml_model(path: str | Path, model: type[M]) -> M:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(path, [f" cannot read: {e.strerror}"]) from e
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{mark.line + 1}" if mark is not None else "1"
        raise ConfigError(path, [f"{where}: invalid YAML: {getattr(e, 'problem', e)}"]) from e
    data = _to_python(root, path) if root is not None else {}
    try:
        return model.model_validate(data)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            loc = (err.get("ctx") or {}).get("loc") or err["loc"]
            loc = tuple(p for p in loc if not (isinstance(p, str) and p.startswith("function-")))
            line, shown = _locate(root, loc)
            problems.append(f"{line}: {_field_path(shown)}: {err['msg']}")
        raise ConfigError(path, problems) from None
