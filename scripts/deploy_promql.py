"""What a PromQL expression reads: its selectors, functions and grouping labels, from the
syntax tree of promql-parser (a Rust PromQL parser). promtool still decides whether an
expression is valid for the Prometheus that runs it (check_deploy.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import promql_parser as pp

# Grafana's time variables, made concrete so that a PromQL parser accepts the expression.
GRAFANA_TIME_VARS = re.compile(r"\$\{?__(?:rate_interval|interval|range)(?:_ms|_s)?\}?")
# The parser's enums are unhashable: keyed by their names.
_MATCH_OPS = {"Equal": "=", "NotEqual": "!=", "Re": "=~", "NotRe": "!~"}
_GROUP_SIDE = {"ManyToOne": "group_left", "OneToMany": "group_right"}


def _name(member: object) -> str:
    return str(member).rpartition(".")[2]  # "MatchOp.Equal" -> "Equal"


@dataclass
class Selector:
    metric: str
    matchers: list[tuple[str, str, str]]  # (label, op, value)


@dataclass
class PromQL:
    selectors: list[Selector] = field(default_factory=list)
    functions: set[str] = field(default_factory=set)
    grouping: dict[str, set[str]] = field(default_factory=dict)  # by/without/on/... -> labels
    aggregated: bool = False
    errors: list[str] = field(default_factory=list)


def concrete(expr: str) -> str:
    """A Grafana query as plain PromQL ($__rate_interval and friends as 1m)."""
    return GRAFANA_TIME_VARS.sub("1m", expr)


def analyse(expr: str) -> PromQL:
    """Selectors, functions and grouping labels of a PromQL (or Grafana) expression."""
    out = PromQL()
    try:
        tree = pp.parse(concrete(expr))
    except ValueError as exc:
        out.errors.append(f"PromQL does not parse: {exc}")
        return out

    def group(clause: str, labels: list[str] | None) -> None:
        out.grouping.setdefault(clause, set()).update(labels or [])

    def visit(node: pp.Expr) -> None:
        if isinstance(node, pp.VectorSelector):
            found = [(m.name, _MATCH_OPS[_name(m.op)], m.value) for m in node.matchers.matchers]
            names = [value for label, op, value in found if label == "__name__" and op == "="]
            if node.name or names:
                out.selectors.append(Selector(node.name or names[0], found))
            else:
                out.errors.append("a selector without a metric name")
        elif isinstance(node, pp.Call):
            out.functions.add(node.func.name)
        elif isinstance(node, pp.AggregateExpr):
            out.functions.add(str(node.op))
            out.aggregated = True
            if node.modifier is not None:
                by = node.modifier.type == pp.AggModifierType.By
                group("by" if by else "without", node.modifier.labels)
        elif isinstance(node, pp.BinaryExpr) and node.modifier is not None:
            matching = node.modifier.matching
            if matching is not None:
                on = matching.type == pp.LabelModifierType.Include
                group("on" if on else "ignoring", matching.labels)
            side = _GROUP_SIDE.get(_name(node.modifier.card))
            if side and node.modifier.group_labels:
                group(side, node.modifier.group_labels)

    pp.walk(tree, visit)
    return out
