"""The ``rewardcal`` command: serve, calibrate, build-default-model.

``rewardcal serve --max-batch-size 64`` overrides ``REWARDCAL_MAX_BATCH_SIZE``: every
settings field is a flag, generated from the one settings object.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from rewardcal.config import Settings, settings_fields
from rewardcal.log_context import configure_logging

EXIT_BAD_CONFIG = 2
EXIT_START_FAILED = 1


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_settings_flags(parser: argparse.ArgumentParser) -> None:
    for name, field in settings_fields().items():
        help_text = (field.description or "").replace("%", "%%")
        if field.annotation is bool:
            parser.add_argument(
                _flag(name),
                dest=name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text,
            )
        else:
            parser.add_argument(_flag(name), dest=name, default=None, help=help_text)


def settings_from_args(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {
        name: getattr(args, name)
        for name in settings_fields()
        if getattr(args, name, None) is not None
    }
    return Settings(**overrides)


def _one_line(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        loc = ".".join(str(p) for p in item.get("loc", ()))
        message = str(item.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{loc}: {message}" if loc else message)
    return "; ".join(parts)


def _load_settings(args: argparse.Namespace) -> Settings:
    try:
        return settings_from_args(args)
    except ValidationError as exc:
        print(f"rewardcal: invalid settings: {_one_line(exc)}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_CONFIG) from None


def _banner(settings: Settings, model_id: str) -> str:
    base = f"http://{settings.host}:{settings.port}"
    auth = ' -H "Authorization: Bearer $KEY"' if settings.api_keys else ""
    return (
        f"rewardcal: serving {model_id!r} ({settings.backend}) on {base}\n"
        f"  ready?   curl {base}/ready{auth}\n"
        f"  score:   curl {base}/v1/rewards{auth} -H 'Content-Type: application/json' "
        """-d '{"items":[{"prompt":"What is 2+2?","response":"4."}]}'\n"""
        f"  docs:    {base}/docs    metrics: {base}/metrics\n"
    )


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from rewardcal.api import create_app
    from rewardcal.api.deps import security_warnings
    from rewardcal.api.http_protocol import header_timeout_protocol

    settings = _load_settings(args)
    configure_logging(settings.log_level)
    model_path = settings.model_path
    if model_path is None:
        from rewardcal.default_model import ensure_default_model

        model_path = ensure_default_model(settings.cache_dir, progress=True)
    elif not model_path.exists():
        print(f"rewardcal: model path {model_path} does not exist", file=sys.stderr)
        return EXIT_START_FAILED

    server_holder: dict[str, uvicorn.Server] = {}

    def on_fatal(_message: str) -> None:
        server = server_holder.get("server")
        if server is not None:
            server.should_exit = True

    for warning in security_warnings(settings):
        logging.getLogger("rewardcal").warning(warning)
    if settings.workers > 1:
        return _serve_workers(settings, model_path)
    app = create_app(settings, model_path, on_fatal=on_fatal, freeze_heap=True)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        lifespan="on",
        timeout_graceful_shutdown=30,
        access_log=False,
        http=header_timeout_protocol(settings.header_timeout_s),
    )
    server = uvicorn.Server(config)
    server_holder["server"] = server
    model_id = settings.served_model_name or model_path.name
    print(_banner(settings, model_id), flush=True)
    server.run()
    if app.state.fatal_error:
        print(f"rewardcal: model failed to load: {app.state.fatal_error}", file=sys.stderr)
        return EXIT_START_FAILED
    return 0


def _serve_workers(settings: Settings, model_path: Path) -> int:
    """``workers`` > 1 (shared store only): uvicorn's process manager starts N worker
    processes on one port; each loads the model and shares calibration through the store.
    Metrics of all workers are added up at /metrics (prometheus_client multiprocess mode)."""
    import tempfile

    import uvicorn

    from rewardcal.api.worker import WORKER_SETTINGS_ENV, settings_json

    metrics_dir = tempfile.mkdtemp(prefix="rewardcal-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    os.environ["REWARDCAL_HEADER_TIMEOUT_S"] = str(settings.header_timeout_s)
    os.environ[WORKER_SETTINGS_ENV] = settings_json(settings, model_path)
    print(_banner(settings, settings.served_model_name or model_path.name), flush=True)
    print(f"rewardcal: {settings.workers} worker processes", flush=True)
    try:
        uvicorn.run(
            "rewardcal.api.worker:create_worker_app",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_level=settings.log_level,
            lifespan="on",
            timeout_graceful_shutdown=30,
            access_log=False,
            http="rewardcal.api.http_protocol:WorkerHTTPProtocol",
        )
    finally:
        import shutil

        shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def cmd_build_default_model(args: argparse.Namespace) -> int:
    from rewardcal.default_model import build_default_model, ensure_default_model

    settings = _load_settings(args)
    cache_dir = settings.cache_dir
    if args.force:
        path = build_default_model(cache_dir, progress=True, force=True)
    else:
        path = ensure_default_model(cache_dir, progress=True)
    print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rewardcal", description="Reward-model serving with online length-bias calibration"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve a reward model over HTTP")
    add_settings_flags(serve)
    serve.set_defaults(func=cmd_serve)

    build = sub.add_parser(
        "build-default-model", help="fine-tune the embedded default reward model (offline)"
    )
    add_settings_flags(build)
    build.add_argument("--force", action="store_true", help="rebuild even if cached")
    build.set_defaults(func=cmd_build_default_model)

    from rewardcal.offline import add_calibrate_parser

    add_calibrate_parser(sub)  # `rewardcal calibrate FILE`: offline, the paper's protocol
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
