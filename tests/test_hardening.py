"""Hostile and careless clients: isolation, Unicode, roles, validated imports and
snapshots, group lifecycle, fairness of tokenization, disconnects, slow headers."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from rewardcal import formatting
from rewardcal.api.deps import security_warnings
from rewardcal.calibration import CalibrationEngine, validate_group
from rewardcal.calibration.config import StreamConfig
from rewardcal.calibration.persistence import LocalSnapshotStore, StreamSnapshot
from rewardcal.config import Settings
from rewardcal.errors import ServiceError
from rewardcal.metrics import CalibrationMetrics
from rewardcal.pipeline.admission import Admission
from rewardcal.scheduler import BatchPolicy, Scheduler
from rewardcal.scoring import ScoreInput, ScoringService
from tests.conftest import AppFactory
from tests.fakes import FakeBackend, LengthBiasedBackend
from tests.live_server import live_server, raw_request, read_response
from tests.traffic import alpaca_items

ITEM = {"prompt": "What is 2+2?", "response": "4."}
SCORING_KEY, ADMIN_KEY = "score-key", "admin-key"
JSON = {"Content-Type": "application/json"}


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == status
    assert "Traceback" not in response.text
    return dict(body["error"])


def _wait_ready(client: Any, headers: dict[str, str]) -> None:
    deadline = time.monotonic() + 60
    while client.get("/ready", headers=headers).status_code != 200:
        assert time.monotonic() < deadline, "service not ready"
        time.sleep(0.02)


# ---- isolation ---------------------------------------------------------------------------


def test_bad_inputs_never_fail_other_clients_requests(
    make_client: AppFactory, tiny_models: dict[str, Path]
) -> None:
    """Real transformers backend: out-of-vocabulary, negative and huge token ids and lone
    surrogates sent together with valid requests, many rounds: every valid one gets 200."""
    client = make_client(tiny_models["bert"], max_wait_ms=20, max_batch_size=64)
    vocab = len(client.app.state.runtime.artifacts.tokenizer)  # type: ignore[attr-defined]
    bad_bodies = [
        ("/classify", {"input": [101, vocab, 102]}, 400),
        ("/classify", {"input": [[101, 7592, 102], [101, vocab + 5, 102]]}, 400),
        ("/classify", {"input": [101, -1, 102]}, 422),
        ("/classify", {"input": [101, 2**40, 102]}, 422),
        ("/pooling", {"input": "\ud83d"}, 400),
        ("/get_reward", {"query": ["\ud83d"]}, 400),
        ("/v1/rewards", {"items": [{"prompt": "q", "response": "a\udc00b"}]}, 400),
        ("/classify", {"model": "/\ud83d", "input": "hi"}, 400),
        ("/classify", {"model": "/models/a\u0000b", "input": "hi"}, 404),
    ]
    good = ("/v1/rewards", {"items": [ITEM]}, 200)
    calls = [good] * 8 + bad_bodies
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        for _ in range(5):
            random.shuffle(calls)
            # json.dumps escapes lone surrogates as \ud83d, as a client's JSON encoder does.
            futures = [
                pool.submit(client.post, path, content=json.dumps(body), headers=JSON)
                for path, body, _ in calls
            ]
            for (path, _body, status), future in zip(calls, futures, strict=True):
                response = future.result()
                assert response.status_code == status, (path, response.text)
                if status != 200:
                    _error(response, status)


def test_a_failing_batch_is_split_so_only_the_input_at_fault_fails(
    make_client: AppFactory, tiny_models: dict[str, Path], fake_backend: FakeBackend
) -> None:
    poison = "zebra"
    poison_id = fake_backend.tokenizer(poison, add_special_tokens=False)["input_ids"][-1]
    assert poison_id not in fake_backend.tokenizer(ITEM["prompt"] + ITEM["response"])["input_ids"]
    fake_backend.fail_when = lambda batch: any(poison_id in ids for ids in batch)
    fake_backend.gate = threading.Event()
    client = make_client(tiny_models["bert"], backend=fake_backend, max_wait_ms=50)
    calls = [{"items": [ITEM]}] * 6 + [{"items": [{"prompt": "q", "response": poison}]}]
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = [pool.submit(client.post, "/v1/rewards", json=body) for body in calls]
        time.sleep(0.3)  # let them queue into one batch
        fake_backend.gate.set()
        statuses = [f.result().status_code for f in futures]
    assert statuses == [200] * 6 + [502]
    assert max(len(batch) for batch in fake_backend.batches) > 1  # they did share a batch


def test_lone_surrogate_is_400_on_every_route_and_keep_alive_survives(
    tiny_models: dict[str, Path], fake_backend: FakeBackend
) -> None:
    bodies = {
        "/v1/rewards": {"items": [{"prompt": "\ud83d", "response": "a"}]},
        "/v1/rewards/compare": {"pairs": [{"prompt": "p", "chosen": "\ud83d", "rejected": "r"}]},
        "/get_reward": {"query": ["\ud83d"]},
        "/classify": {"input": ["ok", "\ud83d"]},
        "/pooling": {"messages": [{"role": "assistant", "content": "\ud83d"}]},
    }
    with live_server(tiny_models["bert"], fake_backend) as (base, _app):
        port = int(base.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as sock:
            for path, body in bodies.items():
                # json.dumps writes the lone surrogate as the \ud83d escape clients send.
                sock.sendall(raw_request(path, json.dumps(body).encode()))
                status, payload = read_response(sock)
                assert status == 400, (path, payload)
                assert "not valid Unicode" in json.loads(payload)["error"]["message"]
            sock.sendall(raw_request("/v1/rewards", json.dumps({"items": [ITEM]}).encode()))
            assert read_response(sock)[0] == 200  # same connection, still usable


# ---- roles -------------------------------------------------------------------------------


def test_state_changing_routes_need_an_admin_key(
    make_client: AppFactory, tiny_models: dict[str, Path], bert_tokenizer: Any
) -> None:
    client = make_client(
        tiny_models["bert"],
        backend=LengthBiasedBackend(bert_tokenizer),
        wait=False,
        api_keys=SCORING_KEY,
        admin_api_keys=ADMIN_KEY,
        calibration_min_samples=50,
    )
    scoring = {"Authorization": f"Bearer {SCORING_KEY}"}
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    _wait_ready(client, scoring)
    items = alpaca_items(60)
    ok = client.post(
        "/v1/rewards", json={"items": items, "calibration_group": "r"}, headers=scoring
    )
    assert ok.status_code == 200
    assert client.post("/v1/rewards", json={"items": [ITEM]}, headers=admin).status_code == 200
    _error(client.post("/v1/rewards", json={"items": [ITEM]}), 401)
    # Reading calibration state is open to scoring keys.
    for path in ("/v1/calibration", "/v1/calibration/r", "/v1/calibration/r/export"):
        assert client.get(path, headers=scoring).status_code == 200, path
    exported = client.get("/v1/calibration/r/export", headers=admin).json()
    changes = [
        ("post", "/v1/calibration/r/refit", None),
        ("post", "/v1/calibration/r/freeze", None),
        ("post", "/v1/calibration/r/unfreeze", None),
        ("post", "/v1/calibration/r/reset", None),
        ("put", "/v1/calibration/other/import", exported),
        ("delete", "/v1/calibration/r", None),
    ]
    for method, path, body in changes:
        kwargs: dict[str, Any] = {"json": body} if body is not None else {}
        refused = client.request(method.upper(), path, headers=scoring, **kwargs)
        assert "admin key" in _error(refused, 403)["message"], path
        _error(client.request(method.upper(), path, **kwargs), 401)
    for method, path, body in changes:
        kwargs = {"json": body} if body is not None else {}
        if path.endswith("/import"):
            kwargs["json"] = {**exported, "curve": exported["curve"] or None}
            if exported["curve"] is None:
                continue
        allowed = client.request(method.upper(), path, headers=admin, **kwargs)
        assert allowed.status_code == 200, (path, allowed.text)


def test_no_keys_stays_open_and_warns_off_loopback() -> None:
    assert security_warnings(Settings(host="127.0.0.1")) == []
    (warning,) = security_warnings(Settings(host="0.0.0.0"))
    assert "no API keys" in warning
    assert security_warnings(Settings(host="0.0.0.0", api_keys="k")) == []


def test_protect_metrics_covers_docs_and_openapi(
    make_client: AppFactory, tiny_models: dict[str, Path], fake_backend: FakeBackend
) -> None:
    client = make_client(
        tiny_models["bert"],
        backend=fake_backend,
        wait=False,
        api_keys=SCORING_KEY,
        protect_metrics=True,
    )
    headers = {"Authorization": f"Bearer {SCORING_KEY}"}
    _wait_ready(client, headers)
    for path in ("/metrics", "/docs", "/openapi.json"):
        _error(client.get(path), 401)
        assert client.get(path, headers=headers).status_code == 200, path
    assert client.get("/health").status_code == 200
    open_client = make_client(tiny_models["bert"], backend=FakeBackend(fake_backend.tokenizer))
    for path in ("/metrics", "/docs", "/openapi.json"):
        assert open_client.get(path).status_code == 200, path


# ---- imports ----------------------------------------------------------------------------


@pytest.fixture
def fitted(make_client: AppFactory, tiny_models: dict[str, Path], bert_tokenizer: Any) -> Any:
    client = make_client(
        tiny_models["bert"],
        backend=LengthBiasedBackend(bert_tokenizer),
        calibration_min_samples=100,
        calibration_refit_every=100_000,
        calibration_refit_interval_s=3600,
    )
    client.post("/v1/rewards", json={"items": alpaca_items(200), "calibration_group": "train"})
    assert client.post("/v1/calibration/train/refit").json()["version"] >= 1
    exported = client.get("/v1/calibration/train/export").json()
    return client, exported


def _with(exported: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    body = json.loads(json.dumps(exported))
    target = body
    keys = path.split(".")
    for key in keys[:-1]:
        target = target[int(key)] if isinstance(target, list) else target[key]
    target[keys[-1]] = value
    return body


def test_imports_are_validated_as_a_whole(fitted: Any) -> None:
    client, exported = fitted
    bad = {
        "std 0": _with(exported, "curve.post", {"mean": 0.0, "std": 0.0, "clip": None}),
        "mean without std": _with(exported, "curve.post", {"mean": 0.0}),
        "clip 0": _with(exported, "curve.post", {"clip": 0.0}),
        "negative version": _with(exported, "curve.version", -5),
        "huge version": _with(exported, "curve.version", 10**30),
        "alpha": _with(exported, "curve.components.0.alpha", 11.0),
        "unsorted": _with(exported, "curve.components.0.estimator.xs", [3.0, 2.0, 1.0]),
        "lengths": _with(exported, "curve.components.0.estimator.ys", [1.0]),
        "too many points": _with(
            exported,
            "curve.components.0.estimator",
            {"kind": "lowess", "xs": list(range(140_000)), "ys": [0.0] * 140_000},
        ),
    }
    for name, body in bad.items():
        _error(client.put("/v1/calibration/eval/import", json=body), 422), name
    # NaN and a 4000-digit version, as raw JSON (Python's json reads both).
    text = json.dumps(exported)
    nan_mean = text.replace(
        '"post": {"mean": null, "std": null', '"post": {"mean": NaN, "std": 1.0'
    )
    assert "NaN" in nan_mean
    headers = {"Content-Type": "application/json"}
    _error(client.put("/v1/calibration/eval/import", content=nan_mean, headers=headers), 422)
    version = json.dumps(exported["curve"]["version"])
    digits = text.replace(
        f'"version": {version}, "method"', '"version": ' + "9" * 4000 + ', "method"'
    )
    assert "9" * 4000 in digits
    _error(client.put("/v1/calibration/eval/import", content=digits, headers=headers), 422)
    # None of them created or changed anything.
    assert "eval" not in {s["group"] for s in client.get("/v1/calibration").json()["data"]}


def test_the_server_assigns_import_versions_and_export_round_trips(fitted: Any) -> None:
    client, exported = fitted
    client.post("/v1/rewards", json={"items": alpaca_items(50), "calibration_group": "train"})
    latest = client.post("/v1/calibration/train/refit").json()["version"]
    assert latest == exported["version"] + 1
    # Importing the older curve into the group gives it the next version, never its old one.
    imported = client.put("/v1/calibration/train/import", json={**exported, "freeze": True})
    assert imported.json()["version"] == latest + 1
    again = client.get("/v1/calibration/train/export")
    assert len(again.content) < Settings().max_body_bytes
    round_trip = client.put("/v1/calibration/copy/import", content=again.content)
    assert round_trip.status_code == 200, round_trip.text
    rewards = [
        client.post(
            "/v1/rewards",
            json={"items": alpaca_items(10), "calibration_group": g, "observe": False},
        ).json()
        for g in ("train", "copy")
    ]
    assert [d["reward"] for d in rewards[0]["data"]] == [d["reward"] for d in rewards[1]["data"]]
    assert rewards[0]["calibration"]["version"] == latest + 1
    assert rewards[1]["calibration"]["version"] == 1


def test_a_snapshot_that_decodes_but_does_not_validate_is_skipped(
    make_client: AppFactory,
    tiny_models: dict[str, Path],
    fake_backend: FakeBackend,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = LocalSnapshotStore(tmp_path / "state")
    meta = {
        "model": "tiny-bert",
        "group": "broken",
        "config": StreamConfig().model_dump(mode="json"),
        "version": 1,
        "observed_total": [1],
    }
    store.save(StreamSnapshot(meta, np.zeros((0, 3)), np.zeros(0)))
    good = {**meta, "group": "fine", "observed_total": 0}
    store.save(StreamSnapshot(good, np.zeros((0, 3)), np.zeros(0)))
    caplog.set_level(logging.WARNING)
    client = make_client(tiny_models["bert"], backend=fake_backend, state_dir=tmp_path / "state")
    assert client.get("/ready").status_code == 200
    groups = {s["group"] for s in client.get("/v1/calibration").json()["data"]}
    assert groups == {"fine"}
    (warning,) = [r.getMessage() for r in caplog.records if "does not validate" in r.getMessage()]
    assert store.path_for("tiny-bert", "broken").name in warning and "observed_total" in warning


# ---- group lifecycle -----------------------------------------------------------------------


def test_group_names_are_matched_whole() -> None:
    assert validate_group("run1") == "run1"
    for bad in ("run1\n", "run 1", "run\x001", "-run", "a" * 65, "ru\u00e9n"):
        with pytest.raises(ServiceError):
            validate_group(bad)


def test_delete_reset_and_observe_false_free_or_spare_slots(
    make_client: AppFactory, tiny_models: dict[str, Path], fake_backend: FakeBackend, tmp_path: Path
) -> None:
    client = make_client(
        tiny_models["bert"],
        backend=fake_backend,
        calibration_max_groups=2,
        snapshot_interval_s=0.1,
        state_dir=tmp_path / "state",
    )

    def score(group: str, observe: bool = True) -> httpx.Response:
        body = {"items": [ITEM], "calibration_group": group, "observe": observe}
        return client.post("/v1/rewards", json=body)

    # observe: false never creates a group, and says so.
    evaluation = score("eval-only", observe=False)
    assert evaluation.json()["calibration"]["status"] == "unknown_group"
    assert client.get("/v1/calibration").json()["data"] == []
    assert 'group="eval-only"' not in client.get("/metrics").text
    assert score("a").status_code == 200 and score("b").status_code == 200
    assert "too many calibration groups" in _error(score("c"), 400)["message"]
    # reset frees a slot (the emptied name keeps its version counter only).
    assert client.post("/v1/calibration/a/reset").status_code == 200
    assert score("c").status_code == 200
    assert client.get("/v1/calibration").json()["active_groups"] == 2
    # delete frees one too, and removes the snapshot file.
    store = LocalSnapshotStore(tmp_path / "state")
    deadline = time.monotonic() + 10
    while not store.path_for("tiny-bert", "b").exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    deleted = client.delete("/v1/calibration/b")
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True
    assert not store.path_for("tiny-bert", "b").exists()
    _error(client.get("/v1/calibration/b"), 404)
    _error(client.delete("/v1/calibration/b"), 404)
    _error(client.delete("/v1/calibration/bad%20name"), 422)
    assert score("d").status_code == 200


def test_idle_groups_are_evicted_with_their_snapshot(tmp_path: Path) -> None:
    store = LocalSnapshotStore(tmp_path)
    engine = CalibrationEngine(StreamConfig(), store=store, idle_ttl_s=3600)
    engine.record(
        "m", "old", [{"chars": 1.0, "tokens": 1.0, "markdown": 0.0}], [0.5], [0.5], observe=True
    )
    engine.record(
        "m", "new", [{"chars": 1.0, "tokens": 1.0, "markdown": 0.0}], [0.5], [0.5], observe=True
    )
    engine.snapshot()
    engine.stream("m", "old").last_used_at -= 7200
    assert engine.evict_idle() == ["old"]
    assert [s.group for s in engine.streams()] == ["new"]
    assert not store.path_for("m", "old").exists() and store.path_for("m", "new").exists()
    never = CalibrationEngine(StreamConfig(), idle_ttl_s=0)
    never.stream("m", "g").last_used_at -= 10**9
    assert never.evict_idle() == []


def test_streams_of_a_model_not_served_are_listed_not_loaded(
    make_client: AppFactory, tiny_models: dict[str, Path], fake_backend: FakeBackend, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    first = make_client(
        tiny_models["bert"],
        backend=fake_backend,
        served_model_name="old-rm",
        calibration_max_groups=2,
        state_dir=state,
    )
    for group in ("x", "y"):
        first.post("/v1/rewards", json={"items": [ITEM], "calibration_group": group})
    first.app.state.runtime.calibration.snapshot()  # type: ignore[attr-defined]
    second = make_client(
        tiny_models["bert"],
        backend=FakeBackend(fake_backend.tokenizer),
        served_model_name="new-rm",
        calibration_max_groups=2,
        state_dir=state,
    )
    assert second.post("/v1/rewards", json={"items": [ITEM]}).status_code == 200
    listing = second.get("/v1/calibration").json()
    assert {(u["model"], u["group"]) for u in listing["unserved"]} == {
        ("old-rm", "x"),
        ("old-rm", "y"),
    }
    assert listing["active_groups"] == 1
    assert second.delete("/v1/calibration/x?model=old-rm").status_code == 200
    assert {u["group"] for u in second.get("/v1/calibration").json()["unserved"]} == {"y"}
    assert not LocalSnapshotStore(state).path_for("old-rm", "x").exists()


# ---- fairness ---------------------------------------------------------------------------


@pytest.mark.parametrize("side", ["left", "right"])
def test_cutting_text_before_tokenization_gives_the_tokens_of_full_tokenization(
    bert_tokenizer: Any, side: str
) -> None:
    rng = random.Random(7)
    words = [t["response"] for t in alpaca_items(200)]
    corpus = " ".join(words).split()
    limit = 32
    bound = formatting.char_bound(limit)
    specials = formatting.special_tokens(bert_tokenizer)
    for trial in range(20):
        size = rng.randrange(bound // 2, bound * 3)
        text = " ".join(rng.choice(corpus) for _ in range(size // 5))[: size if trial % 2 else None]
        full = bert_tokenizer(text, add_special_tokens=True, verbose=False)["input_ids"]
        expected = formatting.truncate_ids(full, limit, side, specials)  # type: ignore[arg-type]
        got = formatting.encode_one(bert_tokenizer, text, limit, side)  # type: ignore[arg-type]
        assert got.ids == expected, trial
        assert got.length > limit or len(full) <= limit


class RecordingTokenizer:
    """Wraps a tokenizer and records the characters of every text it is asked to encode
    (its Rust tokenizer hidden, so that every encode goes through the call)."""

    backend_tokenizer = None

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.calls: list[int] = []
        self.texts: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __len__(self) -> int:
        return len(self._inner)

    def __call__(self, text: Any, *args: Any, **kwargs: Any) -> Any:
        for one in [text] if isinstance(text, str) else text:
            self.calls.append(len(one))
            self.texts.append(one[:16])
        return self._inner(text, *args, **kwargs)


def _scoring(tokenizer: Any) -> tuple[ScoringService, Scheduler, CalibrationEngine]:
    backend = FakeBackend(tokenizer)
    backend.started = True
    scheduler = Scheduler(backend, BatchPolicy(4096, 64, 0.001))
    engine = CalibrationEngine(StreamConfig())
    scoring = ScoringService(
        model_id="m",
        backend=backend,
        tokenizer=tokenizer,
        admission=Admission(4096),
        scheduler=scheduler,
        calibration=engine,
        max_items=512,
        truncation="left",
        max_input_tokens=512,
    )
    return scoring, scheduler, engine


async def test_a_small_request_is_not_held_behind_a_15_mb_one(bert_tokenizer: Any) -> None:
    tokenizer = RecordingTokenizer(bert_tokenizer)
    scoring, scheduler, _ = _scoring(tokenizer)
    await scheduler.start()
    try:
        word = "lorem ipsum dolor sit amet "
        huge = [ScoreInput(text=(word * 1200)[:30_000]) for _ in range(500)]  # 15 MB
        big = asyncio.create_task(scoring.score(huge, group="g"))
        while len(tokenizer.calls) < 3:
            await asyncio.sleep(0.001)
        seen_before = sum(tokenizer.calls)
        await scoring.score([ScoreInput(text="SMALLREQUEST is here")], group="g")
        index = tokenizer.texts.index("SMALLREQUEST is ")
        tokenized_in_between = sum(tokenizer.calls[:index]) - seen_before
        # At most one chunk of the big request ran between the small one's arrival and its
        # tokenization: bounded characters, not the 15 MB.
        assert tokenized_in_between <= 2 * 131_072 + formatting.char_bound(512)
        assert not big.done()
        big.cancel()
        with pytest.raises(asyncio.CancelledError):
            await big
        await asyncio.sleep(1.0)  # the chunk already in the tokenizer thread finishes
        stopped_at = len(tokenizer.calls)
        await asyncio.sleep(0.5)
        assert len(tokenizer.calls) == stopped_at  # its client left: no more work for it
        assert sum(tokenizer.calls) < 15_000_000 // 2
    finally:
        await scheduler.stop()
        scoring.close()


async def test_one_huge_text_is_never_tokenized_whole(bert_tokenizer: Any) -> None:
    tokenizer = RecordingTokenizer(bert_tokenizer)
    scoring, scheduler, _ = _scoring(tokenizer)
    await scheduler.start()
    try:
        text = "a few words of a very long answer " * 450_000  # about 15 MB
        result = await scoring.score([ScoreInput(text=text)], group="g")
        assert max(tokenizer.calls) <= 2 * formatting.char_bound(512)
        assert result.items[0].input_tokens == 512
        assert result.items[0].features["chars"] == len(text)
    finally:
        await scheduler.stop()
        scoring.close()


def test_truncate_prompt_tokens_is_honoured(
    make_client: AppFactory, tiny_models: dict[str, Path], fake_backend: FakeBackend
) -> None:
    client = make_client(tiny_models["bert"], backend=fake_backend)
    text = "one two three four five six seven eight"
    sep = fake_backend.tokenizer.sep_token_id
    three = client.post("/classify", json={"input": text, "truncate_prompt_tokens": 3})
    assert three.status_code == 200 and fake_backend.scored_ids[-1][-1] == sep
    assert len(fake_backend.scored_ids[-1]) == 3
    ids = fake_backend.tokenizer(text)["input_ids"]
    client.post("/classify", json={"input": ids, "truncate_prompt_tokens": 4})
    assert fake_backend.scored_ids[-1] == [ids[0], *ids[-3:]]  # [CLS] ... [SEP] kept
    refused = client.post("/classify", json={"input": text, "truncate_prompt_tokens": 1})
    assert "special tokens" in _error(refused, 400)["message"]


def test_get_reward_says_when_prompts_do_not_match(
    make_client: AppFactory, tiny_models: dict[str, Path], fake_backend: FakeBackend
) -> None:
    client = make_client(tiny_models["bert"], backend=fake_backend)
    body = {"query": ["Q: hi A: yo", "Q: x A: y"], "prompts": ["Q: hi", "other"]}
    out = client.post("/get_reward", json=body).json()
    assert out["extra_logs"]["prompt_matched"] == [1.0, 0.0]
    assert out["extra_logs"]["response_chars"] == [len(" A: yo"), len("Q: x A: y")]
    _error(client.post("/get_reward", json={**body, "labels": ["a"]}), 422)


# ---- disconnects and slow clients --------------------------------------------------------


def test_client_disconnect_is_499_not_500(
    tiny_models: dict[str, Path], fake_backend: FakeBackend, caplog: pytest.LogCaptureFixture
) -> None:
    fake_backend.delay_s = 1.0
    caplog.set_level(logging.INFO)
    with live_server(tiny_models["bert"], fake_backend) as (base, _app):
        port = int(base.rsplit(":", 1)[1])
        for _ in range(2):  # leaves while its request is being scored
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.sendall(raw_request("/v1/rewards", json.dumps({"items": [ITEM]}).encode()))
                time.sleep(0.3)
        with socket.create_connection(("127.0.0.1", port)) as sock:  # leaves mid-body
            sock.sendall(raw_request("/v1/rewards", b'{"items": [{"prompt": "q", ')[:-10])
            time.sleep(0.3)
        time.sleep(1.5)
        metrics = httpx.get(f"{base}/metrics").text
    closed = [
        line
        for line in metrics.splitlines()
        if line.startswith("rewardcal_requests_total{") and 'status="499"' in line
    ]
    assert closed and sum(float(line.split()[-1]) for line in closed) == 3, metrics
    assert 'status="400"' not in metrics
    assert 'status="500"' not in metrics and 'type="internal_error"' not in metrics
    assert any("499" in r.getMessage() and r.levelno == logging.INFO for r in caplog.records)
    assert not any(r.exc_info for r in caplog.records)


@pytest.mark.parametrize("protocol", ["h11", "httptools"])
def test_connections_without_complete_headers_are_closed(
    tiny_models: dict[str, Path], fake_backend: FakeBackend, protocol: str
) -> None:
    if protocol == "h11":
        from uvicorn.protocols.http.h11_impl import H11Protocol as base
    else:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base
    fake_backend.delay_s = 1.0  # a request in progress longer than the header timeout
    with live_server(
        tiny_models["bert"], fake_backend, protocol_base=base, header_timeout_s=0.5
    ) as (base_url, _app):
        port = int(base_url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as slow:
            slow.sendall(b"POST /v1/rewards HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            started = time.monotonic()
            slow.settimeout(10)
            for _ in range(20):  # trickling bytes does not keep it open
                try:
                    slow.sendall(b"X")
                except OSError:
                    break
                time.sleep(0.1)
            assert slow.recv(1024) == b""  # closed by the server
            assert time.monotonic() - started < 8
        with socket.create_connection(("127.0.0.1", port)) as ok:
            ok.sendall(raw_request("/v1/rewards", json.dumps({"items": [ITEM]}).encode()))
            assert read_response(ok)[0] == 200  # a slow answer is not cut


def test_engine_forgets_metric_series_of_deleted_groups() -> None:
    registry = CollectorRegistry()
    engine = CalibrationEngine(StreamConfig(), metrics=CalibrationMetrics(registry))
    features = [{"chars": 3.0, "tokens": 1.0, "markdown": 0.0}]
    engine.record("m", "gone", features, [0.1], [0.1], observe=True)
    assert registry.get_sample_value("rewardcal_window_samples", {"model": "m", "group": "gone"})
    assert engine.delete("m", "gone")
    assert (
        registry.get_sample_value("rewardcal_window_samples", {"model": "m", "group": "gone"})
        is None
    )


def test_errors_are_counted_by_their_type_not_their_status(
    make_client: AppFactory, tiny_models: dict[str, Path], fake_backend: FakeBackend
) -> None:
    """503 while the model loads is not_ready_error, not overload (both are 503)."""
    fake_backend.start_delay_s = 30
    client = make_client(tiny_models["bert"], backend=fake_backend, wait=False)
    loading = client.post("/v1/rewards", json={"items": [ITEM]})
    assert loading.status_code == 503
    metrics = client.get("/metrics").text
    assert 'rewardcal_errors_total{type="not_ready_error"} 1.0' in metrics
    assert "overloaded_error" not in metrics
