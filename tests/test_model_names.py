"""Clients configured for vLLM name the model by the path it was loaded from (vLLM's own
server does so unless --served-model-name is set); verl sends that path and does not retry
a 4xx. The path is the same model; any other name is still a 404 listing what is served."""

from __future__ import annotations

import os
from pathlib import Path

from tests.conftest import AppFactory
from tests.fakes import FakeBackend

ITEM = {"prompt": "What is 2+2?", "response": "It is 4."}


def test_the_load_path_names_the_served_model(
    make_client: AppFactory, tiny_models: dict[str, Path], fake_backend: FakeBackend
) -> None:
    path = tiny_models["bert"]
    client = make_client(path, backend=fake_backend)
    ids = [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert ids == ["tiny-bert", str(path)]  # the short name first: the default for clients

    relative = os.path.relpath(path)
    for name in ("tiny-bert", str(path), f"{path}/", relative, f"{path}/../{path.name}"):
        response = client.post("/classify", json={"model": name, "input": "user: hi\n"})
        assert response.status_code == 200, (name, response.text)
        assert response.json()["model"] == "tiny-bert"
        rewards = client.post("/v1/rewards", json={"model": name, "items": [ITEM]})
        assert rewards.status_code == 200, (name, rewards.text)

    for wrong in ("other-rm", f"{path.parent}/tiny-llama", "/tiny-bert"):
        response = client.post("/classify", json={"model": wrong, "input": "user: hi\n"})
        assert response.status_code == 404, wrong
        error = response.json()["error"]
        assert error["type"] == "not_found_error"
        assert "'tiny-bert'" in error["message"] and repr(str(path)) in error["message"]


def test_a_served_name_replaces_the_path_in_the_list_but_the_path_still_resolves(
    make_client: AppFactory, tiny_models: dict[str, Path], fake_backend: FakeBackend
) -> None:
    path = tiny_models["bert"]
    client = make_client(path, backend=fake_backend, served_model_name="my-rm")
    assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["my-rm"]
    ok = client.post("/classify", json={"model": str(path), "input": "user: hi\n"})
    assert ok.status_code == 200 and ok.json()["model"] == "my-rm"
    missing = client.post("/classify", json={"model": "tiny-bert", "input": "user: hi\n"})
    assert missing.status_code == 404 and "'my-rm'" in missing.json()["error"]["message"]
