"""Every route, its shape, and every error status, in process."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import AppFactory
from tests.fakes import FakeBackend

ITEM = {"prompt": "What is 2+2?", "response": "It is 4."}


def _assert_envelope(response, status: int, error_type: str) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "code"}
    assert body["error"]["code"] == status
    assert body["error"]["type"] == error_type
    assert "Traceback" not in response.text and 'File "' not in response.text
    return body["error"]


def test_rewards_shape_and_warming_up_fields(
    make_client: AppFactory, tiny_models: dict[str, Path]
) -> None:
    client = make_client(tiny_models["bert"])
    body = {
        "items": [
            ITEM,
            {
                "messages": [
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello **there**"},
                ]
            },
        ]
    }
    response = client.post("/v1/rewards", json=body)
    assert response.status_code == 200, response.text
    out = response.json()
    assert out["model"] == "tiny-bert"
    # Before min_samples observations the stream is warming up: reward = raw.
    assert out["calibration"] == {
        "group": "default",
        "version": 0,
        "status": "warming_up",
        "method": "lowess",
    }
    assert [d["index"] for d in out["data"]] == [0, 1]
    for datum in out["data"]:
        assert datum["reward"] == datum["raw_reward"] and datum["bias"] == 0.0
        assert math.isfinite(datum["raw_reward"])
    assert out["data"][0]["features"]["chars"] == len("It is 4.")
    assert out["data"][1]["features"]["chars"] == len("Hello **there**")
    assert out["data"][1]["features"]["markdown"] == 1
    assert out["usage"]["prompt_tokens"] > 0
    assert response.headers["x-request-id"]


def test_rewards_match_the_backend_score_of_the_same_text(
    make_client: AppFactory, tiny_models: dict[str, Path]
) -> None:
    from rewardcal import formatting
    from rewardcal.backends.transformers_backend import TransformersBackend

    client = make_client(tiny_models["llama"])
    out = client.post("/v1/rewards", json={"items": [ITEM]}).json()
    direct = TransformersBackend(tiny_models["llama"])
    direct.load()
    text = formatting.render_messages(
        direct.artifacts.tokenizer, formatting.pair_messages(ITEM["prompt"], ITEM["response"])
    )
    ids, _ = formatting.encode(direct.artifacts.tokenizer, [text], 512)
    assert out["data"][0]["raw_reward"] == pytest.approx(direct.forward(ids)[0], abs=1e-5)
    # The same text through OpenRLHF's and vLLM's routes scores the same.
    rlhf = client.post("/get_reward", json={"query": [text]}).json()
    assert rlhf["rewards"][0] == pytest.approx(out["data"][0]["raw_reward"], abs=1e-5)
    vllm = client.post("/classify", json={"input": text, "use_activation": False}).json()
    assert vllm["data"][0]["probs"][0] == pytest.approx(out["data"][0]["raw_reward"], abs=1e-5)


def test_compare_gives_margin_and_probability(
    make_client: AppFactory, tiny_models: dict[str, Path], fake_backend: FakeBackend
) -> None:
    client = make_client(tiny_models["bert"], backend=fake_backend)
    pair = {"prompt": "Explain.", "chosen": "A long and careful explanation.", "rejected": "No."}
    out = client.post("/v1/rewards/compare", json={"pairs": [pair, pair]}).json()
    assert len(out["data"]) == 2
    datum = out["data"][0]
    assert datum["margin"] == pytest.approx(datum["chosen"]["reward"] - datum["rejected"]["reward"])
    assert datum["p_chosen"] == pytest.approx(1 / (1 + math.exp(-datum["margin"])))
    assert datum["p_chosen"] > 0.5  # the fake model pays for length
    assert datum["chosen"]["features"]["chars"] == len(pair["chosen"])


def test_get_reward_batch_and_single_sample_shapes(
    make_client: AppFactory, tiny_models: dict[str, Path], fake_backend: FakeBackend
) -> None:
    client = make_client(tiny_models["bert"], backend=fake_backend)
    # OpenRLHF v0.8: a batch per request.
    batch = {
        "query": ["PROMPT A: answer one", "PROMPT B: a second, longer answer"],
        "prompts": ["PROMPT A:", "PROMPT B:"],
        "labels": ["x", "y"],
    }
    out = client.post("/get_reward", json=batch).json()
    assert len(out["rewards"]) == 2 and out["scores"] == out["rewards"]
    logs = out["extra_logs"]
    assert logs["response_chars"] == [len(" answer one"), len(" a second, longer answer")]
    assert logs["raw_reward"] == out["rewards"]
    assert set(logs) >= {"raw_reward", "bias", "response_chars", "calibration_version"}
    # OpenRLHF v0.9+: one sample per request (a list of one, or a bare string).
    single = client.post(
        "/get_reward", json={"query": ["Q: hi A: yo"], "prompts": ["Q: hi"], "labels": [None]}
    ).json()
    assert len(single["rewards"]) == 1 and single["extra_logs"]["response_chars"] == [len(" A: yo")]
    bare = client.post("/get_reward", json={"query": "Q: hi A: yo"}).json()
    assert bare["extra_logs"]["response_chars"] == [len("Q: hi A: yo")]
    mismatch = client.post("/get_reward", json={"query": ["a", "b"], "prompts": ["a"]})
    _assert_envelope(mismatch, 422, "validation_error")


@pytest.mark.parametrize("route", ["/classify", "/pooling"])
def test_vllm_shapes_activation_and_inputs(
    route: str, make_client: AppFactory, tiny_models: dict[str, Path], fake_backend: FakeBackend
) -> None:
    client = make_client(tiny_models["bert"], backend=fake_backend)
    raw = client.post(
        route, json={"model": "tiny-bert", "input": ["one two", "three"], "activation": False}
    ).json()
    assert raw["object"] == "list" and raw["model"] == "tiny-bert"
    assert {"prompt_tokens", "total_tokens"} <= set(raw["usage"])
    scores = [d["probs"][0] for d in raw["data"]]
    assert scores == [d["raw_reward"] for d in raw["data"]]
    if route == "/pooling":
        assert [d["data"] for d in raw["data"]] == [d["probs"] for d in raw["data"]]
    sig = client.post(route, json={"input": ["one two", "three"]}).json()  # vLLM default: sigmoid
    assert [d["probs"][0] for d in sig["data"]] == pytest.approx(
        [1 / (1 + math.exp(-s)) for s in scores]
    )
    new_name = client.post(route, json={"input": "one two", "use_activation": False}).json()
    assert new_name["data"][-1]["probs"][-1] == pytest.approx(scores[0])
    ids = client.post(
        route, json={"input": [[2, 10, 11, 3], [2, 12, 3]], "use_activation": False}
    ).json()
    assert [d["probs"][0] for d in ids["data"]] == pytest.approx([0.04, 0.03])
    chat = client.post(
        route,
        json={
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "answer"},
            ],
            "use_activation": False,
        },
    ).json()
    assert len(chat["data"]) == 1
    truncated = client.post(
        route,
        json={
            "input": "a b c d e f g h i j k",
            "truncate_prompt_tokens": 4,
            "use_activation": False,
        },
    ).json()
    assert truncated["data"][0]["probs"][0] == pytest.approx(0.04)
    too_long = client.post(route, json={"input": "a", "truncate_prompt_tokens": 10_000})
    _assert_envelope(too_long, 400, "invalid_request_error")


def test_models_health_ready_metrics(
    make_client: AppFactory, tiny_models: dict[str, Path], fake_backend: FakeBackend
) -> None:
    client = make_client(tiny_models["bert"], backend=fake_backend, served_model_name="my-rm")
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json()["ready"] is True
    models = client.get("/v1/models").json()
    assert models["object"] == "list" and models["data"][0]["id"] == "my-rm"
    assert client.post("/v1/rewards", json={"model": "my-rm", "items": [ITEM]}).status_code == 200
    text = client.get("/metrics").text
    assert 'rewardcal_requests_total{route="/v1/rewards",status="200"} 1.0' in text
    assert 'rewardcal_items_total{model="my-rm"} 1.0' in text
    assert "rewardcal_batch_size_bucket" in text


def test_ready_is_503_until_the_model_is_loaded(
    make_client: AppFactory, tiny_models: dict[str, Path], fake_backend: FakeBackend
) -> None:
    fake_backend.start_delay_s = 0.5
    client = make_client(tiny_models["bert"], backend=fake_backend, wait=False)
    assert client.get("/health").status_code == 200
    loading = client.get("/ready")
    _assert_envelope(loading, 503, "not_ready_error")
    assert "Retry-After" in loading.headers
    _assert_envelope(client.post("/v1/rewards", json={"items": [ITEM]}), 503, "not_ready_error")
    time.sleep(0.7)
    assert client.get("/ready").status_code == 200


def test_load_failure_is_reported_not_raised(
    make_client: AppFactory, tiny_models: dict[str, Path], fake_backend: FakeBackend
) -> None:
    from rewardcal.backends import BackendStartError

    fake_backend.start_error = BackendStartError("cannot load reward model from /x: broken")
    client = make_client(tiny_models["bert"], backend=fake_backend, wait=False)
    time.sleep(0.1)
    error = _assert_envelope(client.get("/ready"), 503, "not_ready_error")
    assert "broken" in error["message"]
    assert client.app.state.fatal_error == "cannot load reward model from /x: broken"  # type: ignore[attr-defined]


# ---- the error statuses -----------------------------------------------------------------


@pytest.mark.parametrize(
    "route,body,status,error_type",
    [
        ("/v1/rewards", {"items": []}, 422, "validation_error"),
        ("/v1/rewards", {"items": [{"prompt": "x"}]}, 422, "validation_error"),
        ("/v1/rewards", {"items": [{"prompt": 1, "response": ["a"]}]}, 422, "validation_error"),
        ("/v1/rewards", {"items": "nope"}, 422, "validation_error"),
        ("/v1/rewards", {"items": [ITEM], "unknown": 1}, 422, "validation_error"),
        (
            "/v1/rewards",
            {"items": [ITEM], "calibration_group": "bad group!"},
            422,
            "validation_error",
        ),
        (
            "/v1/rewards",
            {"items": [{"messages": [{"role": "user", "content": "no answer"}]}]},
            422,
            "validation_error",
        ),
        ("/v1/rewards", {"model": "other", "items": [ITEM]}, 404, "not_found_error"),
        ("/v1/rewards/compare", {"pairs": []}, 422, "validation_error"),
        ("/get_reward", {"query": []}, 422, "validation_error"),
        ("/get_reward", {"query": [1, 2]}, 422, "validation_error"),
        ("/classify", {"input": []}, 422, "validation_error"),
        (
            "/classify",
            {"input": "a", "messages": [{"role": "user", "content": "b"}]},
            422,
            "validation_error",
        ),
        ("/classify", {"model": "gpt-4", "input": "a"}, 404, "not_found_error"),
        ("/pooling", {"input": "a", "task": "embed"}, 400, "invalid_request_error"),
    ],
)
def test_bad_input_gets_the_envelope(
    route: str,
    body: dict,
    status: int,
    error_type: str,
    make_client: AppFactory,
    tiny_models: dict[str, Path],
    fake_backend: FakeBackend,
) -> None:
    client = make_client(tiny_models["bert"], backend=fake_backend)
    _assert_envelope(client.post(route, json=body), status, error_type)
    assert fake_backend.batches == []  # nothing was scored


def test_malformed_json_and_wrong_content(
    make_client: AppFactory, tiny_models: dict[str, Path], fake_backend: FakeBackend
) -> None:
    client = make_client(tiny_models["bert"], backend=fake_backend)
    bad = client.post(
        "/v1/rewards", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    _assert_envelope(bad, 400, "invalid_request_error")
    form = client.post(
        "/v1/rewards", content=b"a=b", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    _assert_envelope(form, 400, "invalid_request_error")
    _assert_envelope(client.get("/nowhere"), 404, "not_found_error")
    _assert_envelope(client.get("/v1/rewards"), 405, "method_not_allowed_error")


def test_too_many_items_and_too_large_body_are_413(
    make_client: AppFactory, tiny_models: dict[str, Path], fake_backend: FakeBackend
) -> None:
    client = make_client(
        tiny_models["bert"], backend=fake_backend, max_items_per_request=4, max_body_bytes=2000
    )
    error = _assert_envelope(
        client.post("/v1/rewards", json={"items": [ITEM] * 5}), 413, "payload_too_large_error"
    )
    assert "limit is 4" in error["message"]
    _assert_envelope(
        client.post(
            "/v1/rewards/compare",
            json={"pairs": [{"prompt": "p", "chosen": "c", "rejected": "r"}] * 3},
        ),
        413,
        "payload_too_large_error",
    )
    _assert_envelope(
        client.post("/get_reward", json={"query": ["q"] * 5}), 413, "payload_too_large_error"
    )
    big = {"items": [{"prompt": "p", "response": "x" * 5000}]}
    _assert_envelope(client.post("/v1/rewards", json=big), 413, "payload_too_large_error")

    # A body without Content-Length (chunked) is cut off while it streams in.
    def chunks():  # type: ignore[no-untyped-def]
        yield b'{"items": [{"prompt": "p", "response": "'
        for _ in range(10):
            yield b"y" * 500
        yield b'"}]}'

    _assert_envelope(
        client.post("/v1/rewards", content=chunks(), headers={"Content-Type": "application/json"}),
        413,
        "payload_too_large_error",
    )
    assert fake_backend.batches == []


def test_over_long_input_is_truncated_or_refused_per_config(
    make_client: AppFactory, tiny_models: dict[str, Path], fake_backend: FakeBackend
) -> None:
    long_item = {"prompt": "p", "response": " ".join(["word"] * 200)}
    client = make_client(tiny_models["bert"], backend=fake_backend, max_input_tokens=64)
    out = client.post("/v1/rewards", json={"items": [long_item]}).json()
    assert out["data"][0]["raw_reward"] == pytest.approx(0.64)  # scored on 64 tokens
    strict = make_client(
        tiny_models["bert"],
        backend=FakeBackend(fake_backend.tokenizer),
        max_input_tokens=64,
        truncation="error",
    )
    error = _assert_envelope(
        strict.post("/v1/rewards", json={"items": [ITEM, long_item]}), 422, "validation_error"
    )
    assert "input 1" in error["message"] and "limit is 64" in error["message"]


def test_api_keys(
    make_client: AppFactory, tiny_models: dict[str, Path], fake_backend: FakeBackend
) -> None:
    client = make_client(
        tiny_models["bert"], backend=fake_backend, api_keys="k-one,k-two", wait=False
    )
    assert client.get("/health").status_code == 200  # stays open
    _assert_envelope(client.get("/ready"), 401, "authentication_error")
    _assert_envelope(
        client.post("/v1/rewards", json={"items": [ITEM]}), 401, "authentication_error"
    )
    wrong = client.post(
        "/v1/rewards", json={"items": [ITEM]}, headers={"Authorization": "Bearer k-three"}
    )
    _assert_envelope(wrong, 401, "authentication_error")
    assert wrong.headers["www-authenticate"] == "Bearer"
    _assert_envelope(
        client.post("/get_reward", json={"query": ["q"]}, headers={"Authorization": "k-one"}),
        401,
        "authentication_error",
    )
    for key in ("k-one", "k-two"):
        deadline = time.monotonic() + 10
        while client.get("/ready", headers={"Authorization": f"Bearer {key}"}).status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        ok = client.post(
            "/v1/rewards", json={"items": [ITEM]}, headers={"Authorization": f"Bearer {key}"}
        )
        assert ok.status_code == 200
    assert client.get("/metrics").status_code == 200  # open unless protect_metrics
    locked = make_client(
        tiny_models["bert"],
        backend=FakeBackend(fake_backend.tokenizer),
        api_keys="k",
        protect_metrics=True,
        wait=False,
    )
    _assert_envelope(locked.get("/metrics"), 401, "authentication_error")


def test_overload_is_503_with_retry_after_and_accepted_requests_complete(
    make_client: AppFactory, tiny_models: dict[str, Path], fake_backend: FakeBackend
) -> None:
    fake_backend.gate = threading.Event()
    client = make_client(
        tiny_models["bert"],
        backend=fake_backend,
        max_queue=4,
        max_items_per_request=4,
        max_batch_size=4,
        max_wait_ms=0,
        retry_after_s=3,
    )
    results: dict[str, int] = {}

    def send() -> None:
        results["accepted"] = client.post("/v1/rewards", json={"items": [ITEM] * 4}).status_code

    worker = threading.Thread(target=send)
    worker.start()
    deadline = time.monotonic() + 10
    while not fake_backend.batches:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    refused = client.post("/v1/rewards", json={"items": [ITEM]})
    _assert_envelope(refused, 503, "overloaded_error")
    assert refused.headers["retry-after"] == "3"
    fake_backend.gate.set()
    worker.join(10)
    assert results["accepted"] == 200
    assert client.post("/v1/rewards", json={"items": [ITEM]}).status_code == 200


def test_backend_failure_is_5xx_without_trace_and_service_keeps_serving(
    make_client: AppFactory, tiny_models: dict[str, Path], fake_backend: FakeBackend
) -> None:
    fake_backend.fail_when = lambda batch: True  # a broken backend: every pass fails
    client = make_client(tiny_models["bert"], backend=fake_backend, max_wait_ms=0)
    error = _assert_envelope(
        client.post("/v1/rewards", json={"items": [ITEM] * 3}), 502, "backend_error"
    )
    assert "inference failed" in error["message"]
    fake_backend.fail_when = None
    assert client.post("/v1/rewards", json={"items": [ITEM]}).status_code == 200


def test_unexpected_error_is_500_without_trace(
    make_client: AppFactory, tiny_models: dict[str, Path], fake_backend: FakeBackend
) -> None:
    client = make_client(tiny_models["bert"], backend=fake_backend)

    def explode(*_args: object, **_kwargs: object) -> None:
        raise ZeroDivisionError("secret internals /etc/passwd")

    client.app.state.runtime.calibration.record = explode  # type: ignore[attr-defined]
    response = client.post("/v1/rewards", json={"items": [ITEM]})
    error = _assert_envelope(response, 500, "internal_error")
    assert "secret" not in response.text and "ZeroDivision" not in response.text
    assert error["message"] == "internal server error"


def test_request_timeout_is_504(
    make_client: AppFactory, tiny_models: dict[str, Path], fake_backend: FakeBackend
) -> None:
    fake_backend.delay_s = 1.0
    client = make_client(tiny_models["bert"], backend=fake_backend, request_timeout_s=0.2)
    _assert_envelope(client.post("/v1/rewards", json={"items": [ITEM]}), 504, "timeout_error")


def test_request_id_is_echoed(
    make_client: AppFactory, tiny_models: dict[str, Path], fake_backend: FakeBackend
) -> None:
    client = make_client(tiny_models["bert"], backend=fake_backend)
    response = client.post(
        "/v1/rewards", json={"items": [ITEM]}, headers={"X-Request-ID": "trainer-17"}
    )
    assert response.headers["x-request-id"] == "trainer-17"


def test_group_from_header_or_body(
    make_client: AppFactory, tiny_models: dict[str, Path], fake_backend: FakeBackend
) -> None:
    client = make_client(tiny_models["bert"], backend=fake_backend)
    by_header = client.post(
        "/v1/rewards", json={"items": [ITEM]}, headers={"X-Calibration-Group": "run-7"}
    ).json()
    assert by_header["calibration"]["group"] == "run-7"
    by_body = client.post(
        "/v1/rewards",
        json={"items": [ITEM], "calibration_group": "run-8"},
        headers={"X-Calibration-Group": "run-7"},
    ).json()
    assert by_body["calibration"]["group"] == "run-8"


def test_logs_carry_request_ids_but_no_bodies_or_keys(
    make_client: AppFactory, tiny_models: dict[str, Path], fake_backend: FakeBackend
) -> None:
    import logging

    from rewardcal.log_context import LOG_FORMAT, RequestIdFilter

    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    handler = Collect(level=logging.DEBUG)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    previous_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        client = make_client(
            tiny_models["bert"], backend=fake_backend, api_keys="sk-key-4242", wait=False
        )
        auth = {"Authorization": "Bearer sk-key-4242"}
        deadline = time.monotonic() + 30
        while client.get("/ready", headers=auth).status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        fake_backend.fail_when = lambda batch: True
        secret = "my-private-prompt-7731"
        response = client.post(
            "/v1/rewards",
            json={"items": [{"prompt": secret, "response": secret}]},
            headers={"Authorization": "Bearer sk-key-4242", "X-Request-ID": "req-abc-1"},
        )
        assert response.status_code == 502
    finally:
        root.removeHandler(handler)
        root.setLevel(previous_level)
    text = "\n".join(records)
    assert "req-abc-1" in text  # the failure is logged with its request id
    assert secret not in text and "sk-key-4242" not in text
