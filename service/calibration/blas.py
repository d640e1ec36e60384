"""Fits run with one BLAS thread.

numpy's OpenBLAS starts a thread per core and has them spin through every BLAS call. A
refit's numeric work is the compiled LOWESS sums plus small vector products, which the
extra threads do not speed up: 16k-sample auto-span refits back to back with two BLAS
threads took the same ~50 ms of wall time but 106 ms of CPU instead of 49
(bench/bench_refit_cpu.py), the second core's share taken from the request path and unseen
by the refit budget, which reads the fitting thread's own time. threadpoolctl limits
numpy's BLAS only (torch's own threads are another library) and restores the setting after
the fit.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

from threadpoolctl import ThreadpoolController


@functools.cache
def _controller() -> ThreadpoolController:
    return ThreadpoolController()  # scans the loaded libraries once (~1 ms)


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    with _controller().limit(limits=1, user_api="blas"):
        yield
