"""How many CPU threads a dlhisto step uses.

PyTorch, ONNX Runtime, OpenBLAS, OpenMP and numba each start one thread per core by default.
A Galaxy job is given ``GALAXY_SLOTS`` cores, and several jobs share a node: threads beyond the
job's cores spin against each other (three 2-thread trainings on 2 cores took 5.4 times as long
as one; with one thread each, 1.9 times). The tools therefore run ``dlhisto --threads
$GALAXY_SLOTS <step>``.
"""

from __future__ import annotations

import os
import sys

#: read by OpenMP (PyTorch), the BLAS libraries and numba when they load
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")


def limit_threads(count: int) -> None:
    """Use at most ``count`` CPU threads for the rest of this process.

    Parameters
    ----------
    count : int
        Threads per library (PyTorch, ONNX Runtime, BLAS, OpenMP, numba), at least 1.
    """
    if count < 1:
        raise ValueError(f"the thread count must be at least 1, not {count}")
    for variable in THREAD_VARIABLES:
        os.environ[variable] = str(count)
    from threadpoolctl import threadpool_limits  # the BLAS and OpenMP already loaded (numpy's)

    threadpool_limits(count)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(count)


def cpu_threads() -> int:
    """The thread limit set by :func:`limit_threads` (or ``OMP_NUM_THREADS``); 0 when none is set."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() else 0
