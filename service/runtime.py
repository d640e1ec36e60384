"""The objects behind the routes, built in the app's lifespan and torn down in its finally."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

from rewardcal.backends import BackendStartError, RewardBackend, create_backend
from rewardcal.calibration import CalibrationEngine, LocalSnapshotStore
from rewardcal.config import Settings
from rewardcal.metrics import CalibrationMetrics, ServingMetrics
from rewardcal.pipeline.admission import Admission
from rewardcal.pipeline.artifacts import ModelArtifacts, load_model_artifacts
from rewardcal.scheduler import BatchPolicy, Scheduler
from rewardcal.scoring import ScoringService

logger = logging.getLogger(__name__)


def create_calibration(
    settings: Settings, model_id: str, metrics: CalibrationMetrics
) -> CalibrationEngine:
    """The calibration engine of the configured store (routes and scoring see one face)."""
    if settings.shared_store:
        from rewardcal.calibration.redis_store import RedisCalibrationEngine

        password = settings.calibration_store_password
        return RedisCalibrationEngine(
            settings.stream_defaults(),
            settings.calibration_store,
            password=password.get_secret_value() if password is not None else None,
            max_groups=settings.calibration_max_groups,
            metrics=metrics,
            idle_ttl_s=settings.calibration_idle_ttl_s,
            lock_ttl_s=settings.calibration_lock_ttl_s,
            stale_after_s=settings.calibration_store_stale_after_s,
            refit_cpu_share=settings.calibration_refit_cpu_share,
            served_models=[model_id],
        )
    return CalibrationEngine(
        settings.stream_defaults(),
        max_groups=settings.calibration_max_groups,
        store=LocalSnapshotStore(settings.state_dir),
        metrics=metrics,
        snapshot_interval_s=settings.snapshot_interval_s,
        idle_ttl_s=settings.calibration_idle_ttl_s,
        refit_cpu_share=settings.calibration_refit_cpu_share,
        served_models=[model_id],
    )


class Runtime:
    """Settings -> backend, admission, batcher, calibration; the scoring path once the model
    artifacts are loaded (``start``)."""

    def __init__(
        self,
        settings: Settings,
        model_path: Path,
        backend: RewardBackend | None = None,
        registry: CollectorRegistry | None = None,
        artifacts: ModelArtifacts | None = None,
    ) -> None:
        """``artifacts``: tokenizer and config already loaded (tests with a test double
        backend); None: loaded from ``model_path`` at start."""
        self.settings = settings
        self.model_path = model_path
        self.model_id = settings.served_model_name or model_path.name
        self.created = int(time.time())
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = ServingMetrics(self.registry)
        self.backend = backend if backend is not None else create_backend(settings, model_path)
        self.artifacts = artifacts
        self.admission = Admission(
            settings.max_queue, retry_after_s=settings.retry_after_s, metrics=self.metrics
        )
        self.scheduler = Scheduler(
            self.backend,
            BatchPolicy(
                max_batch_tokens=settings.batch_token_budget,
                max_batch_size=settings.max_batch_size,
                max_wait_s=settings.max_wait_ms / 1000.0,
            ),
            self.metrics,
        )
        self.calibration_metrics = CalibrationMetrics(self.registry)
        self.calibration = create_calibration(settings, self.model_id, self.calibration_metrics)
        self._scoring: ScoringService | None = None
        self.ready = asyncio.Event()
        self.start_error: str | None = None

    @property
    def scoring(self) -> ScoringService:
        if self._scoring is None:
            raise RuntimeError("the scoring path exists once the model is loaded")
        return self._scoring

    async def start(self) -> None:
        """Restore calibration state, load the model artifacts once and the backend, then
        open the scoring path. A load failure is recorded as one line and raised as
        BackendStartError."""
        await self.calibration.start()
        try:
            if self.artifacts is None:
                self.artifacts = await asyncio.to_thread(
                    load_model_artifacts,
                    self.model_path,
                    trust_remote_code=self.settings.trust_remote_code,
                    # A remote vLLM holds the weights; here only the tokenizer is needed.
                    config_required=self.settings.backend != "remote",
                )
            await self.backend.start(self.artifacts)
        except BackendStartError as exc:
            self.start_error = str(exc)
            raise
        except Exception as exc:
            self.start_error = f"backend {self.backend.name} failed to start: {exc}"
            raise BackendStartError(self.start_error) from exc
        batching = not self.backend.limits.batches_itself
        if batching:
            await self.scheduler.start()
        self._scoring = ScoringService(
            model_id=self.model_id,
            backend=self.backend,
            tokenizer=self.artifacts.tokenizer,
            calibration=self.calibration,
            admission=self.admission,
            scheduler=self.scheduler if batching else None,
            max_items=self.settings.max_items_per_request,
            truncation=self.settings.truncation,
            max_input_tokens=self.settings.max_input_tokens,
            features=[step.feature for step in self.settings.calibration.features],
            tokenizer_workers=self.settings.tokenizer_workers,
            metrics=self.metrics,
        )
        self.ready.set()
        self.metrics.set_ready(True)
        logger.info("model %s ready on backend %s", self.model_id, self.backend.name)

    async def stop(self) -> None:
        self.ready.clear()
        self.metrics.set_ready(False)
        await self.scheduler.stop()
        await self.calibration.stop()  # writes the final snapshot
        if self._scoring is not None:
            self._scoring.close()
        await self.backend.stop()
