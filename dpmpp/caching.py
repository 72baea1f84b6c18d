"""A cache for heavy objects shared by the app's concurrent sessions."""

from __future__ import annotations

import threading
from collections import defaultdict
from functools import lru_cache, wraps
from typing import Callable


def shared_cache(maxsize: int, key: Callable[..., tuple] | None = None):
    """`functools.lru_cache` that computes each key once, even when several threads ask for it at the same time.

    `lru_cache` alone lets two threads that miss together both compute the value (in the app: the start-up warm-up
    and a visitor's first click both fitting the same UMAP). Here the first caller computes it and the others wait
    for its result. Different keys still compute in parallel.

    `key`, when given, maps the arguments to the ones the function is called with and cached under, so that
    different spellings of one thing share an entry (in the app: `ckpt/`, `//ckpt` and `ckpt/.` are one folder).
    """

    def decorate(function):
        cached = lru_cache(maxsize=maxsize)(function)
        locks: defaultdict[tuple, threading.Lock] = defaultdict(threading.Lock)
        guard = threading.Lock()

        @wraps(function)
        def wrapper(*args):
            if key is not None:
                args = tuple(key(*args))
            with guard:
                lock = locks[args]
            try:
                with lock:
                    return cached(*args)
            finally:
                with guard:  # a waiter still holds `lock`; later callers find the value cached
                    if locks.get(args) is lock and not lock.locked():
                        del locks[args]

        wrapper.cache_clear = cached.cache_clear
        wrapper.cache_info = cached.cache_info
        return wrapper

    return decorate
