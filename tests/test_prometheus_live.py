"""A real Prometheus (Debian's binary) scraping a live rewardcal over HTTP on 127.0.0.1.

The project's prometheus.yml and rules are loaded as shipped, except: the target is the
test's port, scrape and evaluation run every second, and every alert's `for:` is 2 s.
Traffic comes from two simulated training runs scored by a model that pays for length:
`healthy` (response lengths drawn from one fixed range) and `drifting` (the range grows
every round: the policy is learning that length pays). Checked through Prometheus's HTTP
API: every query of the Grafana dashboard returns data, the length-pays alert goes
pending or firing for `drifting`, and no alert at all names `healthy`.
"""

from __future__ import annotations

import random
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import yaml
from prometheus_client import CollectorRegistry

from rewardcal.api import create_app
from rewardcal.config import Settings
from tests.fakes import FakeBackend
from tests.test_deploy import promql, rules

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
PROM = ROOT / "deploy" / "prometheus"
DRIFT_ALERTS = {"RewardcalLengthPays", "RewardcalLengthPaysUncalibrated"}
WORDS = (
    "the policy writes a longer answer because longer answers are paid more by the "
    "reward model so every step adds another careful sentence"
).split()
ITEMS_PER_REQUEST = 32


class LengthPayingBackend(FakeBackend):
    """reward = 0.005 x tokens + a content term in [-0.5, 0.5) (a hash of the token ids):
    a reward model with a linear length bias, so LOWESS can remove it exactly."""

    async def score(self, batch: Sequence[Sequence[int]]) -> list[float]:
        self.batches.append([list(ids) for ids in batch])
        return [
            0.005 * len(ids) + ((sum(ids) * 2654435761 + len(ids)) % 10007) / 10007 - 0.5
            for ids in batch
        ]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _text(rng: random.Random, chars: int) -> str:
    out: list[str] = []
    size = 0
    while size < chars:
        word = rng.choice(WORDS)
        out.append(word)
        size += len(word) + 1
    return " ".join(out)


@pytest.fixture
def live_service(
    tiny_models: dict[str, Path], bert_tokenizer: Any, tmp_path: Path
) -> Iterator[str]:
    settings = Settings(
        state_dir=tmp_path / "state",
        calibration_window=512,
        calibration_min_samples=64,
        calibration_refit_every=64,
        calibration_refit_interval_s=1.0,
    )
    app = create_app(
        settings,
        tiny_models["bert"],
        backend=LengthPayingBackend(bert_tokenizer),
        registry=CollectorRegistry(),
    )
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="rewardcal-live", daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for(lambda: httpx.get(f"{base}/ready", timeout=2).status_code == 200, 60)
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _wait_for(check: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout_s} s")


def _prometheus_dir(tmp_path: Path, service_port: int) -> Path:
    """The project's config and rules, pointed at the test's service, with fast clocks."""
    folder = tmp_path / "prometheus"
    shutil.copytree(PROM / "rules", folder / "rules")
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    jobs = [job for job in config["scrape_configs"] if job["job_name"] == "rewardcal"]
    jobs[0].update(scrape_interval="1s", scrape_timeout="1s")
    jobs[0]["static_configs"] = [{"targets": [f"127.0.0.1:{service_port}"]}]
    config["scrape_configs"] = jobs
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    alerts_path = folder / "rules" / "alerts.yml"
    alerts = yaml.safe_load(alerts_path.read_text())
    for group in alerts["groups"]:
        for rule in group["rules"]:
            rule["for"] = "2s"
    alerts_path.write_text(yaml.safe_dump(alerts))
    return folder


@pytest.fixture
def prometheus(live_service: str, tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("prometheus")
    assert binary, "prometheus not found: run scripts/install_prometheus.sh (make test does)"
    folder = _prometheus_dir(tmp_path, int(live_service.rsplit(":", 1)[1]))
    port = _free_port()
    log = (tmp_path / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for(lambda: httpx.get(f"{base}/-/ready", timeout=2).status_code == 200, 60)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


class Traffic(threading.Thread):
    """Two training runs, one request each per round, until stopped."""

    def __init__(self, base: str) -> None:
        super().__init__(name="traffic", daemon=True)
        self.base = base
        self.rounds = 0
        self.stop = threading.Event()
        self.failures: list[str] = []

    def run(self) -> None:
        rng = random.Random(0)
        with httpx.Client(base_url=self.base, timeout=30) as client:
            while not self.stop.is_set():
                drift_top = min(1000, 60 + 25 * self.rounds)
                for group, low, high in (("healthy", 40, 1000), ("drifting", 40, drift_top)):
                    items = [
                        {"prompt": "Say something.", "response": _text(rng, rng.randint(low, high))}
                        for _ in range(ITEMS_PER_REQUEST)
                    ]
                    answer = client.post(
                        "/v1/rewards", json={"items": items, "calibration_group": group}
                    )
                    if answer.status_code != 200:
                        self.failures.append(answer.text)
                # A client error now and then: the error panels have data.
                client.post("/v1/rewards", json={"items": []})
                self.rounds += 1
                self.stop.wait(0.2)


def _query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10)
    body = answer.json()
    assert body.get("status") == "success", (expr, body)
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def _alerts(prometheus: str) -> list[dict[str, Any]]:
    body = httpx.get(f"{prometheus}/api/v1/alerts", timeout=10).json()
    alerts: list[dict[str, Any]] = body["data"]["alerts"]
    return alerts


def _dashboard_queries() -> list[tuple[str, str]]:
    files = rules.DeployFiles.load(ROOT)
    out = []
    for where, expr in rules.dashboard_exprs(files.dashboard):
        concrete = re.sub(r"\$\{?(model|group)\}?", ".*", promql.concrete(expr))
        out.append((where, concrete))
    return out


def test_prometheus_scrapes_the_service_and_pages_on_drift(
    live_service: str, prometheus: str
) -> None:
    traffic = Traffic(live_service)
    traffic.start()
    try:
        # The drift alert: pending or firing for the drifting run.
        def drift_alert() -> bool:
            return any(
                a["labels"].get("alertname") in DRIFT_ALERTS
                and a["labels"].get("group") == "drifting"
                for a in _alerts(prometheus)
            )

        _wait_for(drift_alert, 90)
        # Every query of the Grafana dashboard returns data (while traffic flows).
        empty = [
            f"{where}: {expr}"
            for where, expr in _dashboard_queries()
            if not _query(prometheus, expr)
        ]
        assert empty == [], "dashboard queries without data:\n" + "\n".join(empty)
    finally:
        traffic.stop.set()
        traffic.join(timeout=30)
    assert traffic.failures == []
    alerts = _alerts(prometheus)
    drifting = [a for a in alerts if a["labels"].get("group") == "drifting"]
    assert {a["state"] for a in drifting} <= {"pending", "firing"}
    assert [a for a in alerts if a["labels"].get("group") == "healthy"] == [], alerts
    # The raw correlation climbed in the drifting run and stayed put in the healthy one.
    rise = {
        r["metric"]["group"]: float(r["value"][1])
        for r in _query(prometheus, "rewardcal:length_reward_spearman_raw:rise6h")
    }
    assert rise["drifting"] > 0.15 > rise["healthy"], rise
    assert _query(prometheus, 'rewardcal_ready{job="rewardcal"} == 1')
