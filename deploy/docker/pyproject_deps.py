"""Print the project's runtime requirements for a Docker build, one per line (stdlib only).

``--all``          every requirement in pyproject.toml's ``[project].dependencies`` (the CPU
                   image).
``--missing``      only those whose distribution is not installed at all (the vLLM image),
                   plus the ``--pin`` ones.
``--constraints``  ``name==version`` of every installed distribution but the ``--pin`` ones:
                   the base image held as it is while the requirements install.

On the vLLM base, torch, fastapi and most of the rest come with vLLM, built and tested
together; installing pyproject's pins over them would pull a second multi-GB torch and could
break vLLM. So an installed distribution is kept as the base ships it, and one outside
pyproject's range is reported on stderr. ``--pin NAME`` is the exception: the service's
tests run on pyproject's transformers, and vLLM's image ships a newer one, so the image
installs the tested pin (it lies inside what vLLM 0.33 accepts: tests/test_extras_resolve.py).
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


# Built from this repository's own folders (client/), installed by the Dockerfile from the
# build context, never from an index.
LOCAL_DISTRIBUTIONS = frozenset({"rewardcal-client"})


def requirements(pyproject: Path) -> list[str]:
    with pyproject.open("rb") as handle:
        listed = tomllib.load(handle)["project"]["dependencies"]
    return [r for r in listed if canonical(requirement_name(r)) not in LOCAL_DISTRIBUTIONS]


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


def missing(
    reqs: list[str], installed: dict[str, str], pinned: frozenset[str] = frozenset()
) -> list[str]:
    """The requirements whose distribution is not installed, and the ``pinned`` ones;
    other mismatches go to stderr."""
    out = []
    for requirement in reqs:
        version = installed.get(requirement_name(requirement))
        if requirement_name(requirement) in pinned:
            out.append(requirement)
        elif version is None:
            out.append(requirement)
        elif _outside_range(requirement, version):
            print(
                f"pyproject_deps: keeping the base image's {requirement_name(requirement)} "
                f"{version} (pyproject asks {requirement!r})",
                file=sys.stderr,
            )
    return out


def constraints(installed: dict[str, str], pinned: frozenset[str]) -> list[str]:
    """Every installed distribution held at its version, except the ``pinned`` ones."""
    return [
        f"{name}=={version}" for name, version in sorted(installed.items()) if name not in pinned
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--all", action="store_true", help="every runtime requirement")
    mode.add_argument("--missing", action="store_true", help="requirements not installed")
    mode.add_argument("--constraints", action="store_true", help="the installed versions")
    parser.add_argument(
        "--pin",
        action="append",
        default=[],
        metavar="NAME",
        help="install pyproject's requirement for NAME even over the base's version",
    )
    parser.add_argument("pyproject", type=Path, nargs="?", default=Path("pyproject.toml"))
    args = parser.parse_args(argv)
    reqs = requirements(args.pyproject)
    pinned = frozenset(canonical(name) for name in args.pin)
    unknown = pinned - {requirement_name(r) for r in reqs}
    if unknown:
        parser.error(f"--pin {', '.join(sorted(unknown))}: not a requirement in {args.pyproject}")
    if args.constraints:
        reqs = constraints(installed_versions(), pinned)
    elif args.missing:
        reqs = missing(reqs, installed_versions(), pinned)
    for requirement in reqs:
        print(requirement)
    return 0


if __name__ == "__main__":
    sys.exit(main())
