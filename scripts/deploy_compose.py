"""docker-compose.yml as Compose reads it: the compose-spec JSON schema (check-jsonschema's
vendored copy) and the two steps no tool here does, since Docker's compose plugin is absent:
``${VAR}`` interpolation, and the short port and volume syntax."""

from __future__ import annotations

import importlib.resources
import json
import re
from dataclasses import dataclass
from typing import Any

from check_jsonschema.builtin_schemas import vendor as check_jsonschema_vendor


@dataclass
class Port:
    host_ip: str
    target: str
    spec: str


@dataclass
class Mount:
    kind: str  # bind | volume | tmpfs
    source: str
    target: str
    read_only: bool


# Compose interpolation (compose-spec's interpolation.md): $$, ${VAR}, $VAR and the
# ${VAR:-default} ${VAR-default} ${VAR:?err} ${VAR?err} ${VAR:+alt} ${VAR+alt} forms.
_VAR = re.compile(
    r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])((?:[^{}]|\{[^}]*\})*))?\}"
    r"|\$([A-Za-z_][A-Za-z0-9_]*)"
)


def interpolate(value: Any) -> Any:
    """A loaded compose document with every variable resolved in an empty environment."""
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        unset_default = match.group(2) in (":-", "-")
        return str(interpolate(match.group(3) or "")) if unset_default else ""

    return _VAR.sub(one, value)


def compose_environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def parse_ports(service: dict[str, Any]) -> list[Port]:
    """Long syntax, or short `[HOST_IP:][HOST:]CONTAINER[/PROTO]` (HOST_IP may be [::1])."""
    ports = []
    for item in service.get("ports") or []:
        if isinstance(item, dict):
            host_ip, target = str(item.get("host_ip", "")), str(item.get("target", ""))
            ports.append(Port(host_ip, target, json.dumps(item)))
            continue
        spec = str(item).split("/")[0]
        match = re.fullmatch(r"(?:(\[[^\]]*\]|[^:]*):)??(?:([^:]*):)?([^:]+)", spec)
        host_ip, _, target = match.groups("") if match else ("", "", spec)
        ports.append(Port(host_ip, target, str(item)))
    return ports


def parse_volumes(service: dict[str, Any]) -> list[Mount]:
    """Long syntax, or short `[SOURCE:]TARGET[:MODE]` (a source with / . ~ is a bind)."""
    mounts = []
    for item in service.get("volumes") or []:
        if isinstance(item, dict):
            source, target = str(item.get("source", "")), str(item.get("target", ""))
            read_only = bool(item.get("read_only", False))
            mounts.append(Mount(item.get("type", "volume"), source, target, read_only))
            continue
        parts = str(item).split(":")
        source, target, mode = (["", *parts, ""] if len(parts) == 1 else [*parts, ""])[:3]
        kind = "bind" if source.startswith((".", "/", "~")) else "volume"
        mounts.append(Mount(kind, source, target, "ro" in mode.split(",")))
    return mounts


def compose_schema() -> dict[str, Any]:
    """The Compose Specification's JSON schema as check-jsonschema vendors it (the schema of
    its `--builtin-schema vendor.compose-spec`), pinned with it in pyproject's dev extra."""
    vendored = importlib.resources.files(check_jsonschema_vendor) / "compose-spec.json"
    schema: dict[str, Any] = json.loads(vendored.read_text("utf-8"))
    return schema
