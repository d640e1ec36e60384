"""The Python client (rewardcal_client): retry policy on a mock transport, then sync, async and
the trainer integrations against ONE real `rewardcal serve` process for the module."""

from __future__ import annotations

import asyncio
import json
import pickle
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from rewardcal_client import (
    AsyncRewardClient,
    RetryPolicy,
    RewardClient,
    RewardConnectionError,
    RewardServiceError,
    integrations,
    make_trl_reward_func,
    make_verl_compute_score,
    pooled_client,
)
from rewardcal_client._http import parse_retry_after
from tests.serve_process import rewardcal_process

KEY = "test-client-key"
FROZEN = "client-frozen"  # calibrated, then frozen: a stable curve with a non-zero bias

# -- retry policy and errors on httpx.MockTransport (no server) -----------------------------------


def _rewards_body(n: int, version: int = 3) -> dict[str, Any]:
    return {
        "object": "list",
        "model": "m",
        "calibration": {
            "group": "g",
            "version": version,
            "status": "calibrated",
            "method": "lowess",
        },
        "data": [
            {
                "index": i,
                "reward": 0.5 + i,
                "raw_reward": 1.0 + i,
                "bias": 0.5,
                "features": {"chars": 2.0, "tokens": 1.0, "markdown": 0.0},
            }
            for i in range(n)
        ],
        "usage": {"prompt_tokens": 1, "total_tokens": 1},
    }


def _envelope(status: int, error_type: str, message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "code": status}}


class Script:
    """A MockTransport handler answering from a list of responses or exceptions (the last one
    repeats), recording the requests it saw."""

    def __init__(self, *steps: httpx.Response | Exception) -> None:
        self.steps = list(steps)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        step = self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]
        if isinstance(step, Exception):
            raise step
        return step


def _mock_client(script: Script, sleeps: list[float], **kwargs: Any) -> RewardClient:
    return RewardClient(
        "http://rm.test",
        transport=httpx.MockTransport(script),
        sleep=sleeps.append,
        rng=random.Random(0),
        **kwargs,
    )


def test_503_with_retry_after_is_retried_once_and_the_wait_is_honoured() -> None:
    script = Script(
        httpx.Response(
            503, json=_envelope(503, "overloaded_error", "queue full"), headers={"Retry-After": "2"}
        ),
        httpx.Response(200, json=_rewards_body(1)),
    )
    sleeps: list[float] = []
    with _mock_client(script, sleeps, retry=RetryPolicy(backoff_base_s=0.5, jitter=0.5)) as rm:
        (result,) = rm.score([("p", "r")])
    assert len(script.requests) == 2
    assert len(sleeps) == 1 and 2.0 <= sleeps[0] <= 2.0 + 0.25
    ids = {r.headers["x-request-id"] for r in script.requests}
    assert len(ids) == 1  # one request id across the retries of one request
    assert (result.reward, result.raw_reward, result.version, result.status) == (
        0.5,
        1.0,
        3,
        "calibrated",
    )


def test_retry_after_is_capped_and_http_dates_are_understood() -> None:
    script = Script(
        httpx.Response(
            503, json=_envelope(503, "overloaded_error", "busy"), headers={"Retry-After": "3600"}
        ),
        httpx.Response(200, json=_rewards_body(1)),
    )
    sleeps: list[float] = []
    with _mock_client(script, sleeps, retry=RetryPolicy(backoff_max_s=7.0)) as rm:
        rm.score([("p", "r")])
    assert sleeps == [7.0]
    now = 1_700_000_000.0
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:30 GMT", now=now) == pytest.approx(10.0)
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_connection_error_is_retried() -> None:
    script = Script(
        httpx.ConnectError("connection refused"), httpx.Response(200, json=_rewards_body(2))
    )
    sleeps: list[float] = []
    with _mock_client(script, sleeps) as rm:
        results = rm.score([("p", "a"), ("p", "b")])
    assert len(script.requests) == 2 and len(sleeps) == 1
    assert [r.index for r in results] == [0, 1]


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (500, "internal_error"),
        (502, "backend_error"),
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (413, "payload_too_large_error"),
        (422, "validation_error"),
    ],
)
def test_other_statuses_are_not_retried(status: int, error_type: str) -> None:
    script = Script(
        httpx.Response(
            status, json=_envelope(status, error_type, "no"), headers={"X-Request-ID": "srv-1"}
        )
    )
    sleeps: list[float] = []
    with _mock_client(script, sleeps) as rm, pytest.raises(RewardServiceError) as info:
        rm.score([("p", "r")])
    assert len(script.requests) == 1 and sleeps == []
    err = info.value
    assert (err.status, err.type, err.message, err.request_id, err.attempts) == (
        status,
        error_type,
        "no",
        "srv-1",
        1,
    )
    assert pickle.loads(pickle.dumps(err)).status == status  # survives Ray / multiprocessing


def test_read_timeout_is_not_retried_because_the_batch_may_have_been_observed() -> None:
    script = Script(httpx.ReadTimeout("slow"))
    sleeps: list[float] = []
    with _mock_client(script, sleeps) as rm, pytest.raises(RewardConnectionError) as info:
        rm.score([("p", "r")])
    assert len(script.requests) == 1 and info.value.type == "timeout_error"


def test_gives_up_after_max_retries_with_the_last_error() -> None:
    script = Script(httpx.Response(503, json=_envelope(503, "overloaded_error", "still full")))
    sleeps: list[float] = []
    policy = RetryPolicy(max_retries=3, backoff_base_s=0.5, backoff_max_s=1.5, jitter=0.0)
    with (
        _mock_client(script, sleeps, retry=policy) as rm,
        pytest.raises(RewardServiceError) as info,
    ):
        rm.score([("p", "r")])
    assert len(script.requests) == 4
    assert sleeps == [0.5, 1.0, 1.5]  # exponential, capped
    assert (info.value.status, info.value.message, info.value.attempts) == (503, "still full", 4)

    script = Script(httpx.ConnectError("refused"))
    sleeps = []
    with _mock_client(script, sleeps, retry=RetryPolicy(max_retries=2)) as rm:
        with pytest.raises(RewardConnectionError) as conn:
            rm.score([("p", "r")])
    assert len(script.requests) == 3 and len(sleeps) == 2
    assert (conn.value.status, conn.value.type, conn.value.attempts) == (
        None,
        "connection_error",
        3,
    )


def test_bad_inputs_fail_before_any_request() -> None:
    script = Script(httpx.Response(200, json=_rewards_body(1)))
    with _mock_client(script, []) as rm:
        assert rm.score([]) == []
        with pytest.raises(TypeError):
            rm.score(["just a string"])  # type: ignore[list-item]
        with pytest.raises(TypeError):
            rm.compare([("p", "only chosen")])  # type: ignore[list-item]
        with pytest.raises(ValueError):
            rm.score_texts(["a", "b"], prompts=["a"])
        with pytest.raises(ValueError):
            rm.score([("p", "r")], batch_size=0)
    assert script.requests == []


async def test_async_retry_and_bounded_concurrency() -> None:
    in_flight = 0
    peak = 0
    calls = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak, calls
        calls += 1
        if calls == 1:
            return httpx.Response(
                503, json=_envelope(503, "overloaded_error", "x"), headers={"Retry-After": "1"}
            )
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        n = len(json.loads(request.content)["items"])
        return httpx.Response(200, json=_rewards_body(n))

    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    async with AsyncRewardClient(
        "http://rm.test",
        transport=httpx.MockTransport(handler),
        batch_size=2,
        max_concurrency=2,
        sleep=fake_sleep,
        rng=random.Random(0),
    ) as rm:
        results = await rm.score([("p", str(i)) for i in range(9)])
    assert calls == 6  # 5 chunks + one 503 retried
    assert len(sleeps) == 1 and 1.0 <= sleeps[0] <= 1.25
    assert peak <= 2
    assert [r.index for r in results] == list(range(9))


# -- the real server process -----------------------------------------------------------------------


ADMIN_KEY = "test-admin-key"


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def server(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    args = [
        "--model-path",
        str(tiny_models["llama"]),
        "--api-keys",
        KEY,
        "--admin-api-keys",
        ADMIN_KEY,
        "--calibration-min-samples",
        "40",
        "--calibration-refit-every",
        "20",
        "--snapshot-interval-s",
        "3600",
    ]
    with rewardcal_process(args, tmp_path_factory.mktemp("client-server"), headers=_auth()) as base:
        _calibrate_and_freeze(base)
        yield base


def _calibrate_and_freeze(base: str) -> None:
    items = [{"prompt": f"q{i}", "response": "word " * (1 + i % 23)} for i in range(60)]
    for start in (0, 30):
        body = {"items": items[start : start + 30], "calibration_group": FROZEN}
        response = httpx.post(f"{base}/v1/rewards", json=body, headers=_auth(), timeout=60)
        assert response.status_code == 200, response.text
    deadline = time.monotonic() + 30
    while httpx.get(f"{base}/v1/calibration/{FROZEN}", headers=_auth()).json()["version"] < 1:
        assert time.monotonic() < deadline, "no curve was fitted"
        time.sleep(0.1)
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    frozen = httpx.post(f"{base}/v1/calibration/{FROZEN}/freeze", headers=admin)
    assert frozen.status_code == 200, frozen.text


PAIRS = [
    ("What is 2+2?", "4."),
    ("Name a colour.", "Blue, like the sky on a clear day, or the sea on a calm one."),
]
CONVERSATION = [
    {"role": "user", "content": "Name a prime."},
    {"role": "assistant", "content": "7 is prime, and so is 11."},
]
DPO = [("Explain recursion.", "A function that calls itself on a smaller input.", "Recursion.")]
TEXT_PROMPTS = ["user: What is 2+2?\nassistant: ", "user: Hi\nassistant: "]
TEXTS = [TEXT_PROMPTS[0] + "4.\n", TEXT_PROMPTS[1] + "Hello there, how can I help you today?\n"]


def _raw(base: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(
        f"{base}{path}",
        json={**body, "calibration_group": FROZEN, "observe": False},
        headers=_auth(),
    )
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module")
def expected(server: str) -> dict[str, dict[str, Any]]:
    """What raw httpx calls answer, to compare every client with."""
    items = [{"prompt": p, "response": r} for p, r in PAIRS] + [{"messages": CONVERSATION}]
    pairs = [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in DPO]
    return {
        "score": _raw(server, "/v1/rewards", {"items": items}),
        "compare": _raw(server, "/v1/rewards/compare", {"pairs": pairs}),
        "texts": _raw(server, "/get_reward", {"query": TEXTS, "prompts": TEXT_PROMPTS}),
    }


def _check_same(
    results: Any, compared: Any, texts: Any, expected: dict[str, dict[str, Any]]
) -> None:
    raw = expected["score"]
    assert [r.index for r in results] == [0, 1, 2]
    for result, datum in zip(results, raw["data"], strict=True):
        assert result.reward == pytest.approx(datum["reward"], abs=1e-6)
        assert result.raw_reward == pytest.approx(datum["raw_reward"], abs=1e-6)
        assert result.bias == pytest.approx(datum["bias"], abs=1e-6)
        assert dict(result.features) == datum["features"]
        assert (result.version, result.status, result.group) == (
            raw["calibration"]["version"],
            "frozen",
            FROZEN,
        )
    assert any(abs(r.bias) > 1e-9 for r in results), "calibration did not act"
    (pair,) = compared
    datum = expected["compare"]["data"][0]
    assert pair.margin == pytest.approx(datum["margin"], abs=1e-6)
    assert pair.raw_margin == pytest.approx(datum["raw_margin"], abs=1e-6)
    assert pair.p_chosen == pytest.approx(datum["p_chosen"], abs=1e-6)
    assert pair.chosen.reward == pytest.approx(datum["chosen"]["reward"], abs=1e-6)
    assert pair.rejected.raw_reward == pytest.approx(datum["rejected"]["raw_reward"], abs=1e-6)
    assert (pair.version, pair.status) == (raw["calibration"]["version"], "frozen")
    got = expected["texts"]
    assert [t.reward for t in texts] == pytest.approx(got["rewards"], abs=1e-6)
    assert [t.raw_reward for t in texts] == pytest.approx(got["extra_logs"]["raw_reward"], abs=1e-6)
    assert [t.features["chars"] for t in texts] == [
        len(t) - len(p) for t, p in zip(TEXTS, TEXT_PROMPTS, strict=True)
    ]
    assert {(t.version, t.status, t.group) for t in texts} == {
        (raw["calibration"]["version"], None, FROZEN)
    }


def test_sync_client_gives_the_numbers_of_a_raw_call(server: str, expected: dict[str, Any]) -> None:
    with RewardClient(server, api_key=KEY, calibration_group=FROZEN, observe=False) as rm:
        assert rm.health() and rm.ready()
        results = rm.score(
            [PAIRS[0], {"prompt": PAIRS[1][0], "response": PAIRS[1][1]}, CONVERSATION]
        )
        compared = rm.compare(DPO)
        texts = rm.score_texts(TEXTS, prompts=TEXT_PROMPTS)
        state = rm.calibration()
        assert rm.models()[0] == "tiny-llama"  # then the path it was loaded from
    _check_same(results, compared, texts, expected)
    assert (state["status"], state["version"], state["frozen"]) == (
        "frozen",
        results[0].version,
        True,
    )
    assert rm.closed


async def test_async_client_gives_the_numbers_of_a_raw_call(
    server: str, expected: dict[str, Any]
) -> None:
    async with AsyncRewardClient(
        server, api_key=KEY, calibration_group=FROZEN, observe=False
    ) as rm:
        assert await rm.health() and await rm.ready()
        results = await rm.score([PAIRS[0], PAIRS[1], {"messages": CONVERSATION}])
        compared = await rm.compare([{"prompt": p, "chosen": c, "rejected": r} for p, c, r in DPO])
        texts = await rm.score_texts(TEXTS, prompts=TEXT_PROMPTS)
        assert (await rm.calibration(FROZEN))["version"] == results[0].version
    _check_same(results, compared, texts, expected)


class CountingTransport(httpx.BaseTransport):
    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.requests: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


class AsyncCountingTransport(httpx.AsyncBaseTransport):
    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def _item_counts(requests: list[httpx.Request]) -> list[int]:
    return sorted((len(json.loads(r.content)["items"]) for r in requests), reverse=True)


async def test_batching_splits_70_items_into_3_requests_and_keeps_order(server: str) -> None:
    items = [(f"question {i}", "word " * (1 + i % 29) + f"#{i}") for i in range(70)]
    options: dict[str, Any] = {"api_key": KEY, "calibration_group": FROZEN, "observe": False}
    with RewardClient(server, batch_size=128, **options) as rm:
        whole = rm.score(items)  # one request: the reference order
    transport = CountingTransport()
    with RewardClient(server, batch_size=32, transport=transport, **options) as rm:
        chunked = rm.score(items)
    assert _item_counts(transport.requests) == [32, 32, 6]
    assert [r.index for r in chunked] == list(range(70))
    assert [r.raw_reward for r in chunked] == pytest.approx([r.raw_reward for r in whole], abs=1e-5)
    assert [r.features["chars"] for r in chunked] == [float(len(resp)) for _, resp in items]

    async_transport = AsyncCountingTransport()
    async with AsyncRewardClient(
        server, batch_size=32, max_concurrency=2, transport=async_transport, **options
    ) as arm:
        concurrent = await arm.score(items)
    assert _item_counts(async_transport.requests) == [32, 32, 6]
    assert [r.raw_reward for r in concurrent] == pytest.approx(
        [r.raw_reward for r in whole], abs=1e-5
    )


def test_version_and_status_flow_through(server: str) -> None:
    with RewardClient(server, api_key=KEY) as rm:
        fresh = rm.score(PAIRS, calibration_group="client-fresh")
        assert {(r.version, r.status, r.group) for r in fresh} == {
            (0, "warming_up", "client-fresh")
        }
        assert all(r.reward == r.raw_reward and r.bias == 0 for r in fresh)
        assert rm.calibration("client-fresh")["window_samples"] == 2  # observed by default
        rm.score(PAIRS, calibration_group="client-fresh", observe=False)
        assert rm.calibration("client-fresh")["window_samples"] == 2
        frozen = rm.score(PAIRS, calibration_group=FROZEN, observe=False)
        assert {r.status for r in frozen} == {"frozen"} and (frozen[0].version or 0) >= 1
        assert frozen[0].method == "lowess" and frozen[0].model == "tiny-llama"
        with pytest.raises(RewardServiceError) as missing:
            rm.calibration("never-used")
        assert missing.value.status == 404


def test_wrong_api_key_raises_401_without_retrying(server: str) -> None:
    transport = CountingTransport()
    with RewardClient(server, api_key="wrong-key", transport=transport) as rm:
        assert rm.health()  # /health needs no key
        with pytest.raises(RewardServiceError) as info:
            rm.score(PAIRS)
        assert len(transport.requests) == 2  # /health + one scoring attempt
        with pytest.raises(RewardServiceError):
            rm.ready()
    err = info.value
    assert (err.status, err.type, err.attempts) == (401, "authentication_error", 1)
    assert "API key" in err.message and err.request_id
    assert err.request_id == transport.requests[1].headers["x-request-id"]  # echoed by the server


def test_trl_reward_func_takes_strings_and_conversations(server: str) -> None:
    reward_fn = make_trl_reward_func(server, api_key=KEY, calibration_group=FROZEN, observe=False)
    assert reward_fn.__name__ == "rewardcal"
    with RewardClient(server, api_key=KEY, calibration_group=FROZEN, observe=False) as rm:
        want_texts = [r.reward for r in rm.score_texts(TEXTS, prompts=TEXT_PROMPTS)]
        want_conv = [r.reward for r in rm.score([CONVERSATION])]
        want_raw = [r.raw_reward for r in rm.score([PAIRS[0]])]

    completions = [t[len(p) :] for t, p in zip(TEXTS, TEXT_PROMPTS, strict=True)]
    logged: dict[str, list[float]] = {}
    got = reward_fn(
        prompts=TEXT_PROMPTS,
        completions=completions,
        log_extra=logged.__setitem__,
        trainer_state=None,
    )
    assert got == pytest.approx(want_texts, abs=1e-6) and all(isinstance(x, float) for x in got)
    assert list(logged) == ["rewardcal_raw"]

    conv = reward_fn(prompts=[CONVERSATION[:1]], completions=[CONVERSATION[1:]], answer=["7"])
    assert conv == pytest.approx(want_conv, abs=1e-6)

    raw_fn = make_trl_reward_func(
        server,
        api_key=KEY,
        calibration_group=FROZEN,
        observe=False,
        use_calibrated=False,
        templated=False,
        name="rm_raw",
    )
    assert raw_fn.__name__ == "rm_raw"
    assert raw_fn([PAIRS[0][0]], [PAIRS[0][1]]) == pytest.approx(want_raw, abs=1e-6)
    clone = pickle.loads(pickle.dumps(raw_fn))  # travels to other processes
    assert clone([PAIRS[0][0]], [PAIRS[0][1]]) == pytest.approx(want_raw, abs=1e-6)


def test_verl_compute_score_returns_a_float_and_reuses_one_client(server: str) -> None:
    compute_score = make_verl_compute_score(
        server, api_key=KEY, calibration_group=FROZEN, observe=False
    )
    score = compute_score(
        data_source="gsm8k",
        solution_str="4.",
        ground_truth="4",
        extra_info={"question": "What is 2+2?"},
    )
    assert isinstance(score, float)
    with RewardClient(server, api_key=KEY, calibration_group=FROZEN, observe=False) as rm:
        (want,) = rm.score([("What is 2+2?", "4.")])
    assert score == pytest.approx(want.reward, abs=1e-6)
    client = pooled_client(server, api_key=KEY)
    assert compute_score("gsm8k", "4.", "4", {"prompt": "What is 2+2?"}) == pytest.approx(
        score, abs=1e-6
    )
    assert pooled_client(server, api_key=KEY) is client  # one pooled connection per process

    # Configured through verl's reward_kwargs only (pointing custom_reward_function.path here).
    direct = integrations.compute_score(
        "gsm8k",
        "4.",
        "4",
        {"question": "What is 2+2?"},
        url=server,
        api_key=KEY,
        calibration_group=FROZEN,
        observe=False,
    )
    assert direct == pytest.approx(score, abs=1e-6)
