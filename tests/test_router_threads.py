"""``single_thread``: a router's per-request numeric calls run on one BLAS/OpenMP thread."""

import numpy as np
from threadpoolctl import threadpool_info

from routerl.routers.threads import single_thread


def test_single_thread_limits_blas_inside_and_restores_after():
    np.ones((4, 4)) @ np.ones(4)  # numpy's BLAS is loaded

    def blas_threads():
        return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]

    before = blas_threads()
    assert before, "numpy has a BLAS library"
    with single_thread("blas"):
        assert set(blas_threads()) == {1}
    assert blas_threads() == before
