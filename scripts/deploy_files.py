"""The deployment files and what they must agree with, for the rules in deploy_rules.py.

``DeployFiles`` keeps the raw texts (a test breaks one with a string replacement) and parses
them on demand: YAML and JSON with their loaders, the Dockerfile and .dockerignore through
deploy_image.py, compose interpolation through deploy_compose.py. Beside them, the facts of
the service: its settings' variable names and the series its metrics export.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import re
import tomllib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pathspec
import yaml
from deploy_compose import compose_environment, interpolate
from deploy_image import Stage, StageState, dockerignore_patterns, exec_form, parse_stages

DOCKERFILE = "Dockerfile"
DOCKERIGNORE = ".dockerignore"
COMPOSE = "docker-compose.yml"
PROMETHEUS_CONFIG = "deploy/prometheus/prometheus.yml"
PROMETHEUS_RULES = "deploy/prometheus/rules"
GRAFANA_PROVISIONING = "deploy/grafana/provisioning"
GRAFANA_DASHBOARDS = "deploy/grafana/dashboards"
DASHBOARD = "deploy/grafana/dashboards/rewardcal.json"
NGINX_CONFIG = "deploy/nginx/nginx.conf"
# The GPU check's entry point (its sibling imports must be in the image too) and the docs
# whose `docker run --gpus` examples are checked.
GPU_CHECK_MAIN = "scripts/gpu_check.py"
RUN_EXAMPLE_DOCS = ("README.md", "docs/gpu.md", "docs/deploy.md")
# Series Prometheus adds to every target.
BUILTIN_SERIES = ("up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_series_added")


def settings_env_names(root: Path) -> frozenset[str]:
    """REWARDCAL_* variables the service reads: every settings field, plus the few read
    directly (string literals in service/, e.g. REWARDCAL_BUILD_THREADS)."""
    config = importlib.import_module("rewardcal.config")
    prefix = config.Settings.model_config.get("env_prefix", "REWARDCAL_")
    # settings_fields: the nested calibration config spelled out knob by knob, as users set
    # it (REWARDCAL_CALIBRATION_FRAC, ...).
    names = {f"{prefix}{name}".upper() for name in config.settings_fields()}
    for path in (root / "service").rglob("*.py"):
        names.update(re.findall(r"[\"'](REWARDCAL_[A-Z0-9_]+)[\"']", path.read_text("utf-8")))
    return frozenset(names)


def metric_catalog(module: str = "rewardcal.metrics") -> dict[str, frozenset[str]]:
    """Every series the service exposes -> its labels, from the metric classes themselves
    (each class taking only a registry is instantiated on a fresh one)."""
    from prometheus_client import CollectorRegistry

    mod = importlib.import_module(module)
    registry = CollectorRegistry()
    for obj in vars(mod).values():
        if inspect.isclass(obj) and obj.__module__ == mod.__name__:
            metrics_class: Any = obj
            if list(inspect.signature(metrics_class).parameters) == ["registry"]:
                metrics_class(registry)
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
        "info": ("_info",),
    }
    catalog: dict[str, frozenset[str]] = {name: frozenset() for name in BUILTIN_SERIES}
    # prometheus_client keeps label names private (_labelnames); stable across releases.
    for collector in list(registry._collector_to_names):
        labels = frozenset(getattr(collector, "_labelnames", ()))
        for family in getattr(collector, "describe")():  # noqa: B009 (not on the protocol)
            for suffix in suffixes.get(family.type, ("",)):
                extra = {"le"} if suffix == "_bucket" else set()
                catalog[family.name + suffix] = labels | extra
    return catalog


@dataclass(frozen=True)
class DeployFiles:
    """Raw texts of every deployment file (and of what they must agree with)."""

    root: Path
    dockerfile_text: str
    dockerignore_text: str
    compose_text: str
    prometheus_text: str
    rules_texts: dict[str, str]
    datasources_texts: dict[str, str]
    providers_texts: dict[str, str]
    dashboard_text: str
    nginx_text: str
    pyproject_text: str
    makefile_text: str
    settings_env: frozenset[str]
    docs_texts: dict[str, str] = field(default_factory=dict)
    gpu_check_text: str = ""

    @classmethod
    def load(cls, root: Path) -> DeployFiles:
        def read(rel: str) -> str:
            path = root / rel
            return path.read_text(encoding="utf-8") if path.is_file() else ""

        def read_dir(rel: str) -> dict[str, str]:
            paths = sorted((root / rel).glob("*.y*ml"))
            return {p.relative_to(root).as_posix(): p.read_text("utf-8") for p in paths}

        return cls(
            root=root,
            dockerfile_text=read(DOCKERFILE),
            dockerignore_text=read(DOCKERIGNORE),
            compose_text=read(COMPOSE),
            prometheus_text=read(PROMETHEUS_CONFIG),
            rules_texts=read_dir(PROMETHEUS_RULES),
            datasources_texts=read_dir(f"{GRAFANA_PROVISIONING}/datasources"),
            providers_texts=read_dir(f"{GRAFANA_PROVISIONING}/dashboards"),
            dashboard_text=read(DASHBOARD),
            nginx_text=read(NGINX_CONFIG),
            pyproject_text=read("pyproject.toml"),
            makefile_text=read("Makefile"),
            settings_env=settings_env_names(root),
            docs_texts={rel: read(rel) for rel in RUN_EXAMPLE_DOCS},
            gpu_check_text=read(GPU_CHECK_MAIN),
        )

    def replace(self, **changes: Any) -> DeployFiles:
        return dataclasses.replace(self, **changes)

    @cached_property
    def stages(self) -> list[Stage]:
        return parse_stages(self.dockerfile_text)

    @cached_property
    def ignore(self) -> list[pathspec.Pattern]:
        return dockerignore_patterns(self.dockerignore_text)

    @cached_property
    def compose_raw(self) -> dict[str, Any]:
        return yaml.safe_load(self.compose_text) or {}

    @cached_property
    def compose(self) -> dict[str, Any]:
        """The compose file as Compose sees it with an empty environment."""
        resolved: dict[str, Any] = interpolate(self.compose_raw)
        return resolved

    @cached_property
    def prometheus(self) -> dict[str, Any]:
        return yaml.safe_load(self.prometheus_text) or {}

    @cached_property
    def rule_groups(self) -> dict[str, list[dict[str, Any]]]:
        """Rule file -> its groups (deploy/prometheus/rules/*.yml)."""
        return {
            path: (yaml.safe_load(text) or {}).get("groups") or []
            for path, text in self.rules_texts.items()
        }

    def _provisioned(self, texts: dict[str, str], key: str) -> list[dict[str, Any]]:
        return [item for t in texts.values() for item in (yaml.safe_load(t) or {}).get(key) or []]

    @cached_property
    def datasources(self) -> list[dict[str, Any]]:
        return self._provisioned(self.datasources_texts, "datasources")

    @cached_property
    def providers(self) -> list[dict[str, Any]]:
        return self._provisioned(self.providers_texts, "providers")

    @cached_property
    def dashboard(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.dashboard_text) if self.dashboard_text else {}
        return loaded

    @cached_property
    def datasource_uid(self) -> str | None:
        uids = [d.get("uid") for d in self.datasources if d.get("type") == "prometheus"]
        return uids[0] if len(uids) == 1 else None

    @property
    def prometheus_jobs(self) -> set[str]:
        return {str(j.get("job_name")) for j in self.prometheus.get("scrape_configs") or []}

    @cached_property
    def pyproject(self) -> dict[str, Any]:
        return tomllib.loads(self.pyproject_text) if self.pyproject_text else {}

    @property
    def services(self) -> dict[str, dict[str, Any]]:
        services: dict[str, dict[str, Any]] = self.compose.get("services") or {}
        return services

    @property
    def stage_names(self) -> set[str]:
        return {s.name for s in self.stages if s.name}

    def stage(self, name: str | None) -> Stage | None:
        """A stage by name; None = the last one (what a build without --target makes)."""
        if name is None:
            return self.stages[-1] if self.stages else None
        return next((s for s in self.stages if s.name == name), None)

    def built_stage(self, service: dict[str, Any]) -> Stage | None:
        """The Dockerfile stage a compose service is built from (our Dockerfile only)."""
        build = service.get("build")
        if isinstance(build, str):
            build = {"context": build}
        if not build or build.get("dockerfile", DOCKERFILE) != DOCKERFILE:
            return None
        return self.stage(build.get("target")) if build.get("context") in (".", "./") else None

    def effective(self, stage: Stage) -> StageState:
        """ENV, USER, HEALTHCHECK, ENTRYPOINT, EXPOSE of a stage, through `FROM stage`."""
        parent = self.stage(stage.base) if stage.base in self.stage_names else None
        state = self.effective(parent) if parent and parent.index < stage.index else StageState()
        state = dataclasses.replace(state, env=dict(state.env), exposed=list(state.exposed))
        for ins in stage.instructions:
            state.env.update(ins.env)
            if ins.keyword == "USER":
                state.user = ins.words[0] if ins.words else ""
            elif ins.keyword == "HEALTHCHECK":
                state.healthcheck = ins.value
            elif ins.keyword == "ENTRYPOINT":
                state.entrypoint = exec_form(ins.value)
            elif ins.keyword == "EXPOSE":
                state.exposed.extend(p.split("/")[0] for p in ins.words)
        return state

    def service_env(self, service: dict[str, Any]) -> dict[str, str]:
        """What the container's environment is known to hold: image ENV, then compose's."""
        stage = self.built_stage(service)
        env = dict(self.effective(stage).env) if stage else {}
        env.update(compose_environment(service))
        return env
