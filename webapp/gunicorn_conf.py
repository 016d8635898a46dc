"""gunicorn settings for `nslab serve` (nslab/cli/web.py passes this module with --config)."""

from __future__ import annotations

import gc


def post_worker_init(worker) -> None:
    """Once the worker has loaded the app: take what exists now (the code of every module
    and what create_app built, about 110,000 objects, none of them ever garbage) out of
    the cyclic garbage collector's sight. A full collection scans every tracked object
    with the GIL held: 60-100 ms during which no terminal of any learner moves, which is
    what the echo p99 caught. What is made afterwards is collected as before."""
    gc.collect()
    gc.freeze()
