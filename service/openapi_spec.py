"""The OpenAPI spec, generated from the app itself (``make openapi`` writes it to
``openapi/openapi.json``; ``make openapi-check`` and the tests fail when it is stale)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SPEC_PATH = Path(__file__).resolve().parent.parent / "openapi" / "openapi.json"


def build_spec() -> dict[str, Any]:
    from rewardcal.api import create_app
    from rewardcal.config import Settings

    # No lifespan runs: building the schema loads no model.
    app = create_app(Settings(_env_file=None), Path("/models/reward-model"))  # type: ignore[call-arg]
    return app.openapi()


def render_spec() -> str:
    return json.dumps(build_spec(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="write or check openapi/openapi.json")
    parser.add_argument("--check", action="store_true", help="fail if the file is stale")
    parser.add_argument("--path", type=Path, default=SPEC_PATH)
    args = parser.parse_args(argv)
    rendered = render_spec()
    if args.check:
        current = args.path.read_text() if args.path.exists() else ""
        if current != rendered:
            print(f"{args.path} is stale: run `make openapi` and commit it")
            return 1
        print(f"{args.path} is up to date")
        return 0
    args.path.parent.mkdir(parents=True, exist_ok=True)
    args.path.write_text(rendered)
    print(f"wrote {args.path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
