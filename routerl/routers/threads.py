"""Run a router's per-request numeric calls on one thread of a native thread pool.

A request's numeric work outside torch is small (a kNN similarity over a few thousand probe
embeddings, the learned router's cluster similarities). Given both cores, numpy's OpenBLAS (or an
OpenMP library) starts a parallel region for it, and its idle workers then spin for a while, taking the
cores the policy's forward pass needs: on this 2-core machine the shipped policy's decision went
from 177 ms to 106 ms (one query, in process) with OpenBLAS held to one thread.

    with single_thread("blas"):
        sims = index.embeddings @ query_vector
"""

from __future__ import annotations

import threading

from threadpoolctl import ThreadpoolController

_CONTROLLER: ThreadpoolController | None = None
_LOCK = threading.Lock()


def single_thread(user_api: str):
    """A context in which the ``user_api`` pools (``"blas"`` or ``"openmp"``) run on one thread."""
    global _CONTROLLER
    if _CONTROLLER is None:
        with _LOCK:
            if _CONTROLLER is None:
                _CONTROLLER = ThreadpoolController()  # scans the loaded libraries once (slow)
    return _CONTROLLER.limit(limits=1, user_api=user_api)
