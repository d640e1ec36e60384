"""Operator routes for calibration streams: inspect, freeze, reset, export, import, plot."""

from __future__ import annotations

import asyncio
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Query, Response

from service.api.deps import RuntimeDep
from service.calibration import CalibrationStream, Curve, validate_group
from service.calibration.config import feature_index
from service.calibration.curve import slope_per_1k, spearman
from service.calibration.plot import render_png
from service.errors import ErrorType, ServiceError, error_responses
from service.runtime import Runtime
from service.schemas.calibration import (
    EXPORT_FORMAT,
    CalibrationExport,
    CalibrationImport,
    CurvePoints,
    StreamDetail,
    StreamList,
    StreamSummary,
)

router = APIRouter(prefix="/v1/calibration", tags=["calibration"])

ModelQuery = Annotated[
    str | None, Query(description="Model id (default: the served model).", max_length=256)
]
OPS_ERRORS = error_responses(400, 401, 404, 422)


def _stream(runtime: Runtime, group: str, model: str | None, *, create: bool) -> CalibrationStream:
    if model is not None and model != runtime.model_id:
        raise ServiceError(ErrorType.NOT_FOUND, f"model {model!r} is not served here")
    return runtime.calibration.stream(runtime.model_id, validate_group(group), create=create)


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
    summary = _summary(stream)
    view = stream.view()
    features, raw = stream.window_arrays()
    config = stream.config
    first = features[:, feature_index(config.features[0].feature)] if raw.size else raw
    rho_raw = spearman(first, raw) if raw.size else None
    rho_cal = None
    slope = None
    points: list[CurvePoints] = []
    curve = view.curve
    if curve is not None:
        if raw.size:
            calibrated, _ = curve.apply_arrays(features, raw)
            rho_cal = spearman(first, calibrated)
            if curve.components:
                slope = slope_per_1k(first, curve.components[0].bias(first))
        for component in curve.components:
            x, y = component.estimator.points()
            points.append(
                CurvePoints(
                    feature=component.feature,
                    alpha=component.alpha,
                    center=component.center,
                    x=x,
                    y=y,
                )
            )
    return StreamDetail(
        **summary.model_dump(),
        config=config,
        observed_total=stream.observed_total,
        curve=points,
        spearman_raw=rho_raw,
        spearman_calibrated=rho_cal if curve is not None else rho_raw,
        slope_per_1k=slope,
        span=curve.span if curve is not None else None,
    )


@router.get("", response_model=StreamList, responses=error_responses(401))
async def list_streams(runtime: RuntimeDep) -> StreamList:
    """Every calibration stream of this server."""
    return StreamList(data=[_summary(s) for s in runtime.calibration.streams()])


@router.get("/{group}", response_model=StreamDetail, responses=OPS_ERRORS)
async def get_stream(group: str, runtime: RuntimeDep, model: ModelQuery = None) -> StreamDetail:
    """Config, window size, curve version and status, curve points, and the length-reward
    Spearman correlation over the window, raw and calibrated."""
    stream = _stream(runtime, group, model, create=False)
    return await asyncio.to_thread(_detail, stream)


@router.post("/{group}/freeze", response_model=StreamSummary, responses=OPS_ERRORS)
async def freeze(group: str, runtime: RuntimeDep, model: ModelQuery = None) -> StreamSummary:
    """Stop refitting: the current curve calibrates every request (reproducible evaluation)."""
    stream = _stream(runtime, group, model, create=True)
    stream.freeze()
    return _summary(stream)


@router.post("/{group}/unfreeze", response_model=StreamSummary, responses=OPS_ERRORS)
async def unfreeze(group: str, runtime: RuntimeDep, model: ModelQuery = None) -> StreamSummary:
    stream = _stream(runtime, group, model, create=False)
    stream.unfreeze()
    return _summary(stream)


@router.post("/{group}/reset", response_model=StreamSummary, responses=OPS_ERRORS)
async def reset(group: str, runtime: RuntimeDep, model: ModelQuery = None) -> StreamSummary:
    """Forget the window and fitted curves (a new training run in the same group)."""
    stream = _stream(runtime, group, model, create=False)
    stream.reset()
    return _summary(stream)


@router.post("/{group}/refit", response_model=StreamSummary, responses=OPS_ERRORS)
async def refit(group: str, runtime: RuntimeDep, model: ModelQuery = None) -> StreamSummary:
    """Refit now instead of waiting for the next scheduled refit (needs min_samples)."""
    stream = _stream(runtime, group, model, create=False)
    if stream.frozen:
        raise ServiceError(ErrorType.INVALID_REQUEST, "the stream is frozen; unfreeze it first")
    if stream.window_samples < stream.config.min_samples:
        raise ServiceError(
            ErrorType.INVALID_REQUEST,
            f"{stream.window_samples} samples in the window; a fit needs "
            f"{stream.config.min_samples}",
        )
    await asyncio.to_thread(runtime.calibration.fit_now, stream)
    return _summary(stream)


@router.get("/{group}/export", response_model=CalibrationExport, responses=OPS_ERRORS)
async def export(group: str, runtime: RuntimeDep, model: ModelQuery = None) -> CalibrationExport:
    """The current curve and config, ready for PUT .../import on another server or group."""
    stream = _stream(runtime, group, model, create=False)
    view = stream.view()
    return CalibrationExport(
        format=EXPORT_FORMAT,
        model=stream.model,
        group=stream.group,
        version=view.version,
        frozen=stream.frozen,
        config=stream.config,
        curve=view.curve.to_dict() if view.curve is not None else None,
    )


@router.put(
    "/{group}/import",
    response_model=StreamSummary,
    responses=error_responses(400, 401, 404, 413, 422),
)
async def import_curve(
    group: str, body: CalibrationImport, runtime: RuntimeDep, model: ModelQuery = None
) -> StreamSummary:
    """Load an exported curve as this stream's reference curve (optionally frozen)."""
    if body.format != EXPORT_FORMAT:
        raise ServiceError(ErrorType.VALIDATION, f"format must be {EXPORT_FORMAT!r}")
    if body.curve is None:
        raise ServiceError(ErrorType.VALIDATION, "curve is missing (export a fitted stream)")
    try:
        curve = Curve.from_dict(body.curve)
        probe = np.zeros((1, 3))
        curve.apply_arrays(probe, np.zeros(1))
    except (KeyError, TypeError, ValueError) as exc:
        raise ServiceError(ErrorType.VALIDATION, f"curve is not valid: {exc}") from None
    stream = _stream(runtime, group, model, create=True)
    freeze_it = body.freeze if body.freeze is not None else body.frozen
    stream.load_reference(curve, body.config, freeze_it)
    return _summary(stream)


@router.get(
    "/{group}/plot.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, **OPS_ERRORS},
)
async def plot(group: str, runtime: RuntimeDep, model: ModelQuery = None) -> Response:
    """Reward vs response length over the window, raw and calibrated, with the curve."""
    stream = _stream(runtime, group, model, create=False)
    features, raw = stream.window_arrays()
    view = stream.view()
    title = f"{stream.model} / {stream.group}: {view.method} v{view.version} ({view.status})"
    png = await asyncio.to_thread(render_png, title, features, raw, view.curve)
    return Response(png, media_type="image/png")
