"""Snapshots of calibration streams that survive restarts, torn writes and corruption.

A snapshot file is ``MAGIC | sha256(body) | body`` where body is an ``.npz`` holding the
stream's metadata (JSON) and its window. Writes go to a temp file that is fsynced and
then renamed over the old snapshot (and the directory fsynced), so a crash at any point
leaves either the old or the new snapshot whole. A file whose checksum does not match is
skipped with a warning: a corrupt snapshot must never stop the service from starting.

``SnapshotStore`` is the interface; ``LocalSnapshotStore`` keeps files in the state dir.
A shared store (Redis) for several replicas would implement the same two calls.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from rewardcal.calibration.window import Array

logger = logging.getLogger(__name__)

MAGIC = b"RWCSNAP1"
_DIGEST = 32
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")


@dataclass(frozen=True)
class StreamSnapshot:
    meta: dict[str, Any]
    features: Array
    raw: Array
    source: str = ""
    """Where it was read from (a file name), for the warning when it does not validate."""


class SnapshotStore(Protocol):
    def save(self, snapshot: StreamSnapshot) -> None: ...

    def load_all(self) -> list[StreamSnapshot]: ...

    def delete(self, model: str, group: str) -> bool: ...


class CorruptSnapshot(ValueError):
    pass


def encode_snapshot(snapshot: StreamSnapshot) -> bytes:
    buffer = io.BytesIO()
    np.savez(
        buffer,
        meta=np.array(json.dumps(snapshot.meta, sort_keys=True)),
        features=np.asarray(snapshot.features, dtype=np.float64),
        raw=np.asarray(snapshot.raw, dtype=np.float64),
    )
    body = buffer.getvalue()
    return MAGIC + hashlib.sha256(body).digest() + body


def decode_snapshot(data: bytes) -> StreamSnapshot:
    if len(data) < len(MAGIC) + _DIGEST or not data.startswith(MAGIC):
        raise CorruptSnapshot("not a rewardcal snapshot (bad header or truncated)")
    digest = data[len(MAGIC) : len(MAGIC) + _DIGEST]
    body = data[len(MAGIC) + _DIGEST :]
    if hashlib.sha256(body).digest() != digest:
        raise CorruptSnapshot("checksum mismatch (torn or corrupted write)")
    try:
        with np.load(io.BytesIO(body), allow_pickle=False) as archive:
            meta = json.loads(str(archive["meta"]))
            return StreamSnapshot(meta, archive["features"].copy(), archive["raw"].copy())
    except (ValueError, KeyError, OSError, json.JSONDecodeError) as exc:
        raise CorruptSnapshot(f"unreadable body: {exc}") from exc


def write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


class LocalSnapshotStore:
    """One file per stream under ``state_dir/calibration``."""

    SUFFIX = ".snapshot"

    def __init__(self, state_dir: Path) -> None:
        self.directory = state_dir / "calibration"

    def path_for(self, model: str, group: str) -> Path:
        name = f"{_UNSAFE.sub('_', model)}__{_UNSAFE.sub('_', group)}"
        digest = hashlib.sha256(f"{model}\0{group}".encode()).hexdigest()[:8]
        return self.directory / f"{name}-{digest}{self.SUFFIX}"

    def save(self, snapshot: StreamSnapshot) -> None:
        path = self.path_for(str(snapshot.meta["model"]), str(snapshot.meta["group"]))
        write_atomically(path, encode_snapshot(snapshot))

    def load_all(self) -> list[StreamSnapshot]:
        if not self.directory.is_dir():
            return []
        snapshots = []
        for path in sorted(self.directory.glob(f"*{self.SUFFIX}")):
            try:
                snapshot = decode_snapshot(path.read_bytes())
            except (CorruptSnapshot, OSError) as exc:
                logger.warning("skipping calibration snapshot %s: %s", path.name, exc)
                continue
            snapshots.append(dataclasses.replace(snapshot, source=path.name))
        return snapshots

    def delete(self, model: str, group: str) -> bool:
        """Remove a stream's snapshot; False when there was none."""
        try:
            self.path_for(model, group).unlink()
        except FileNotFoundError:
            return False
        return True
