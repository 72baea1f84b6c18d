"""A cache for heavy objects shared by the app's concurrent sessions."""

from __future__ import annotations

import threading
from collections import defaultdict
from functools import lru_cache, wraps


def shared_cache(maxsize: int):
    """`functools.lru_cache` that computes each key once, even when several threads ask for it at the same time.

    `lru_cache` alone lets two threads that miss together both compute the value (in the app: the start-up warm-up
    and a visitor's first click both fitting the same UMAP). Here the first caller computes it and the others wait
    for its result. Different keys still compute in parallel.
    """

    def decorate(function):
        cached = lru_cache(maxsize=maxsize)(function)
        locks: defaultdict[tuple, threading.Lock] = defaultdict(threading.Lock)
        guard = threading.Lock()

        @wraps(function)
        def wrapper(*args):
            with guard:
                lock = locks[args]
            with lock:
                return cached(*args)

        wrapper.cache_clear = cached.cache_clear
        wrapper.cache_info = cached.cache_info
        return wrapper

    return decorate
