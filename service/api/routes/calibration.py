"""Operator routes for calibration streams: inspect, freeze, reset, export, import, plot."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query, Response

from rewardcal.api.deps import AdminOnly, RuntimeDep
from rewardcal.calibration import CalibrationStream, validate_group
from rewardcal.calibration.curve import CurveStats
from rewardcal.calibration.plot import render_png
from rewardcal.errors import ErrorType, ServiceError, error_responses
from rewardcal.runtime import Runtime
from rewardcal.schemas.calibration import (
    EXPORT_FORMAT,
    CalibrationExport,
    CalibrationImport,
    CurvePoints,
    DeletedStream,
    StreamDetail,
    StreamList,
    StreamSummary,
    UnservedStream,
)

router = APIRouter(prefix="/v1/calibration", tags=["calibration"])

ModelQuery = Annotated[
    str | None, Query(description="Model id (default: the served model).", max_length=256)
]
OPS_ERRORS = error_responses(400, 401, 404, 422)
ADMIN_ERRORS = error_responses(400, 401, 403, 404, 422)


def _key(runtime: Runtime, group: str, model: str | None) -> tuple[str, str]:
    if model is not None and model != runtime.model_id:
        raise ServiceError(ErrorType.NOT_FOUND, f"model {model!r} is not served here")
    return runtime.model_id, validate_group(group)


def _summary(stream: CalibrationStream) -> StreamSummary:
    view = stream.view()
    return StreamSummary(
        model=stream.model,
        group=stream.group,
        method=view.method,
        status=str(view.status),
        version=view.version,
        frozen=stream.frozen,
        window_samples=stream.window_samples,
    )


def _detail(stream: CalibrationStream) -> StreamDetail:
    """The stream and its current curve, with the statistics stored with the curve."""
    summary = _summary(stream)
    curve = stream.view().curve
    stats = curve.stats if curve is not None else CurveStats()
    points: list[CurvePoints] = []
    for component in curve.components if curve is not None else ():
        x, y = component.estimator.points()
        points.append(
            CurvePoints(
                feature=component.feature, alpha=component.alpha, center=component.center, x=x, y=y
            )
        )
    return StreamDetail(
        **summary.model_dump(),
        config=stream.config,
        observed_total=stream.observed_total,
        curve=points,
        spearman_raw=stats.spearman_raw,
        spearman_calibrated=stats.spearman_calibrated,
        slope_per_1k=stats.slope_per_1k,
        span=curve.span if curve is not None else None,
    )


@router.get("", response_model=StreamList, responses=error_responses(401))
async def list_streams(runtime: RuntimeDep) -> StreamList:
    """Every calibration stream of this server, and the snapshots of models it does not
    serve (not loaded; delete them with ``DELETE /v1/calibration/{group}?model=...``)."""
    engine = runtime.calibration
    return StreamList(
        data=[_summary(s) for s in engine.streams()],
        active_groups=engine.active_groups,
        max_groups=engine.max_groups,
        unserved=[
            UnservedStream(model=model, group=group, snapshot=source)
            for (model, group), source in sorted(engine.unserved.items())
        ],
    )


@router.get("/{group}", response_model=StreamDetail, responses=OPS_ERRORS)
async def get_stream(group: str, runtime: RuntimeDep, model: ModelQuery = None) -> StreamDetail:
    """Config, window size, curve version and status, curve points, and the statistics
    measured when the current curve was fitted: the length-reward Spearman correlation over
    its window, raw and calibrated, and its slope."""
    stream = await runtime.calibration.get(*_key(runtime, group, model))
    # RC-Mean's points evaluate the curve over its whole window: off the event loop.
    return await asyncio.to_thread(_detail, stream)


@router.post(
    "/{group}/freeze",
    response_model=StreamSummary,
    responses=ADMIN_ERRORS,
    dependencies=AdminOnly,
)
async def freeze(group: str, runtime: RuntimeDep, model: ModelQuery = None) -> StreamSummary:
    """Stop refitting: the current curve calibrates every request (reproducible evaluation)."""
    return _summary(await runtime.calibration.freeze(*_key(runtime, group, model)))


@router.post(
    "/{group}/unfreeze",
    response_model=StreamSummary,
    responses=ADMIN_ERRORS,
    dependencies=AdminOnly,
)
async def unfreeze(group: str, runtime: RuntimeDep, model: ModelQuery = None) -> StreamSummary:
    return _summary(await runtime.calibration.unfreeze(*_key(runtime, group, model)))


@router.post(
    "/{group}/reset",
    response_model=StreamSummary,
    responses=ADMIN_ERRORS,
    dependencies=AdminOnly,
)
async def reset(group: str, runtime: RuntimeDep, model: ModelQuery = None) -> StreamSummary:
    """Forget the window and fitted curves (a new training run in the same group); the
    group's slot is free until it is observed again (a reference curve, if any, stays)."""
    return _summary(await runtime.calibration.reset(*_key(runtime, group, model)))


@router.post(
    "/{group}/refit",
    response_model=StreamSummary,
    responses=ADMIN_ERRORS,
    dependencies=AdminOnly,
)
async def refit(group: str, runtime: RuntimeDep, model: ModelQuery = None) -> StreamSummary:
    """Refit now instead of waiting for the next scheduled refit (needs min_samples)."""
    return _summary(await runtime.calibration.refit(*_key(runtime, group, model)))


@router.get("/{group}/export", response_model=CalibrationExport, responses=OPS_ERRORS)
async def export(group: str, runtime: RuntimeDep, model: ModelQuery = None) -> CalibrationExport:
    """The current curve and config, ready for PUT .../import on another server or group."""
    stream = await runtime.calibration.get(*_key(runtime, group, model))
    view = stream.view()
    return CalibrationExport(
        format=EXPORT_FORMAT,
        model=stream.model,
        group=stream.group,
        version=view.version,
        frozen=stream.frozen,
        config=stream.config,
        curve=view.curve,
    )


@router.put(
    "/{group}/import",
    response_model=StreamSummary,
    responses=error_responses(400, 401, 403, 404, 413, 422),
    dependencies=AdminOnly,
)
async def import_curve(
    group: str, body: CalibrationImport, runtime: RuntimeDep, model: ModelQuery = None
) -> StreamSummary:
    """Load an exported curve as this stream's reference curve (optionally frozen).

    The curve is validated as a whole (finite values, std > 0, clip > 0, alpha in
    [0, 10], sorted points, at most 131,072 per estimator) and gets the group's next
    version: the version in the body is not reused, so versions only ever increase."""
    if body.format != EXPORT_FORMAT:
        raise ServiceError(ErrorType.VALIDATION, f"format must be {EXPORT_FORMAT!r}")
    if body.curve is None:
        raise ServiceError(ErrorType.VALIDATION, "curve is missing (export a fitted stream)")
    if body.config is not None and body.config.method != body.curve.method:
        raise ServiceError(
            ErrorType.VALIDATION,
            f"config.method {body.config.method!r} does not match the curve's "
            f"{body.curve.method!r}",
        )
    freeze_it = body.freeze if body.freeze is not None else body.frozen
    stream = await runtime.calibration.import_curve(
        *_key(runtime, group, model), body.curve, body.config, freeze_it
    )
    return _summary(stream)


@router.delete(
    "/{group}",
    response_model=DeletedStream,
    responses=error_responses(400, 401, 403, 404, 422),
    dependencies=AdminOnly,
)
async def delete_stream(group: str, runtime: RuntimeDep, model: ModelQuery = None) -> DeletedStream:
    """Delete a group: its window, curves, snapshot and metric series; its slot is free.
    ``model`` may name a model this server does not serve, to delete the snapshots listed
    under ``unserved``. A later scoring call with the name starts a new group (version 1)."""
    name = validate_group(group)
    owner = model or runtime.model_id
    if not await runtime.calibration.remove(owner, name):
        raise ServiceError(
            ErrorType.NOT_FOUND, f"no calibration stream {name!r} for model {owner!r}"
        )
    return DeletedStream(model=owner, group=name)


@router.get(
    "/{group}/plot.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, **OPS_ERRORS},
)
async def plot(group: str, runtime: RuntimeDep, model: ModelQuery = None) -> Response:
    """Reward vs response length over the window, raw and calibrated, with the curve."""
    key = _key(runtime, group, model)
    stream = await runtime.calibration.get(*key)
    features, raw = await runtime.calibration.window(*key)
    view = stream.view()
    title = f"{stream.model} / {stream.group}: {view.method} v{view.version} ({view.status})"
    png = await asyncio.to_thread(render_png, title, features, raw, view.curve)
    return Response(png, media_type="image/png")
