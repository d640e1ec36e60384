"""The committed OpenAPI spec is current, complete, and uses the one error envelope."""

from __future__ import annotations

import json

from rewardcal.openapi_spec import SPEC_PATH, main, render_spec


def test_committed_spec_is_not_stale() -> None:
    assert SPEC_PATH.exists(), "run `make openapi`"
    assert SPEC_PATH.read_text() == render_spec(), (
        "openapi/openapi.json is stale: run `make openapi`"
    )
    assert main(["--check"]) == 0


def test_check_fails_on_a_stale_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    stale = tmp_path / "openapi.json"
    stale.write_text("{}")
    assert main(["--check", "--path", str(stale)]) == 1


def test_every_error_response_uses_the_envelope() -> None:
    spec = json.loads(render_spec())
    assert "HTTPValidationError" not in json.dumps(spec)
    scoring = {"/v1/rewards", "/v1/rewards/compare", "/get_reward", "/classify", "/pooling"}
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            statuses = set(operation["responses"])
            assert "500" in statuses, (method, path)
            if path != "/health":
                assert "401" in statuses, (method, path)
            if path in scoring:
                assert {"400", "413", "422", "503", "504"} <= statuses, (method, path)
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    content = response["content"]["application/json"]
                    assert content["schema"] == {"$ref": "#/components/schemas/ErrorEnvelope"}
                    example = content["example"]["error"]
                    assert set(example) == {"message", "type", "code"}
