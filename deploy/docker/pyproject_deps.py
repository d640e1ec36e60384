"""Print the project's runtime requirements for a Docker build, one per line (stdlib only).

``--all``      every requirement in pyproject.toml's ``[project].dependencies`` (the CPU image).
``--missing``  only those whose distribution is not installed at all (the vLLM image).

On the vLLM base, torch, transformers, fastapi and most of the rest come with vLLM, built
and tested together; installing pyproject's pins over them would pull a second multi-GB
torch and could break vLLM. So an installed distribution is kept as the base ships it, and
one outside pyproject's range is only reported on stderr.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def canonical(name: str) -> str:
    """PEP 503 normalised name: ``Prometheus_Client`` -> ``prometheus-client``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(pyproject: Path) -> list[str]:
    with pyproject.open("rb") as handle:
        return list(tomllib.load(handle)["project"]["dependencies"])


def requirement_name(requirement: str) -> str:
    match = _NAME.match(requirement)
    if match is None:
        raise ValueError(f"cannot read a distribution name from {requirement!r}")
    return canonical(match.group(1))


def installed_versions() -> dict[str, str]:
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(canonical(name), dist.version)
    return found


def _outside_range(requirement: str, version: str) -> bool:
    try:
        from packaging.requirements import Requirement
    except ImportError:  # no packaging: nothing to compare with, nothing to report
        return False
    return not Requirement(requirement).specifier.contains(version, prereleases=True)


def missing(reqs: list[str], installed: dict[str, str]) -> list[str]:
    """The requirements whose distribution is not installed; mismatches go to stderr."""
    out = []
    for requirement in reqs:
        version = installed.get(requirement_name(requirement))
        if version is None:
            out.append(requirement)
        elif _outside_range(requirement, version):
            print(
                f"pyproject_deps: keeping the base image's {requirement_name(requirement)} "
                f"{version} (pyproject asks {requirement!r})",
                file=sys.stderr,
            )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--all", action="store_true", help="every runtime requirement")
    mode.add_argument("--missing", action="store_true", help="requirements not installed")
    parser.add_argument("pyproject", type=Path, nargs="?", default=Path("pyproject.toml"))
    args = parser.parse_args(argv)
    reqs = requirements(args.pyproject)
    if args.missing:
        reqs = missing(reqs, installed_versions())
    for requirement in reqs:
        print(requirement)
    return 0


if __name__ == "__main__":
    sys.exit(main())
