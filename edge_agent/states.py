"""Declarative state rules: tag comparisons combined with all/any, first matching rule wins."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

from connectors.sample import Sample
from edge_agent.config import Condition, StateRule

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
    "in": lambda a, b: a in b,
    "not_in": lambda a, b: a not in b,
}
NO_RULE_MATCHED = "no rule matched"


def _holds(c: Condition, values: Mapping[str, Sample]) -> bool:
    try:
        return bool(_OPS[c.op](values[c.tag].value, c.value))
    except TypeError:  # e.g. a string compared with a number: the rule simply does not match
        return False


class StateRules:
    def __init__(self, rules: list[StateRule]) -> None:
        self.rules = rules
        self.tags = sorted({c.tag for r in rules for c in r.when.all + r.when.any})

    def evaluate(self, values: Mapping[str, Sample]) -> tuple[str, str | None]:
        """(state, reason) from the latest samples; UNKNOWN unless every tag the rules use is good."""
        for tag in self.tags:
            sample = values.get(tag)
            if sample is None or not sample.good:
                return "UNKNOWN", sample.reason if sample is not None else "no data yet"
        for rule in self.rules:
            w = rule.when
            if all(_holds(c, values) for c in w.all) and (not w.any or any(_holds(c, values) for c in w.any)):
                return rule.state, _reason(rule.reason, values)
        return "IDLE", NO_RULE_MATCHED


def _reason(template: str | None, values: Mapping[str, Sample]) -> str | None:
    if template and template.startswith("{") and template.endswith("}"):
        sample = values.get(template[1:-1])
        return None if sample is None or sample.value is None else str(sample.value)
    return template
