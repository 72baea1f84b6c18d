"""The page and its configuration, built once per server instead of once per visitor.

Gradio renders `/` and `/config` anew for every request: a deep copy and a walk of a 200 kB configuration, about
35 ms of the server's CPU, under the interpreter lock. When a class opens the page at once, thirty of them queue.
Both answers depend only on the app (built once at start) and on how the visitor reached the server, so the first
answer per (path, host, forwarding headers, accepted encoding) is kept and served again. Requests with a query
string (the teacher's link), cookies set by the answer, or any status but 200 pass through untouched.
"""

from __future__ import annotations

CACHED_PATHS = ("/", "/config")
KEY_HEADERS = (b"host", b"accept-encoding", b"x-forwarded-host", b"x-forwarded-proto", b"x-forwarded-prefix")
MAX_ENTRIES = 32  # distinct ways of reaching the server; more are served uncached


class PageCache:
    """ASGI middleware keeping the first 200 answer of each cacheable page request."""

    def __init__(self, app) -> None:
        self.app = app
        self.entries: dict[tuple, tuple[dict, list[dict]]] = {}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "GET" or scope["path"] not in CACHED_PATHS:
            await self.app(scope, receive, send)
            return
        if scope.get("query_string"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        key = (scope["path"], *(headers.get(name, b"") for name in KEY_HEADERS))
        if key in self.entries:
            start, bodies = self.entries[key]
            await send(start)
            for body in bodies:
                await send(body)
            return
        messages: list[dict] = []

        async def keep(message):
            messages.append(message)
            await send(message)

        await self.app(scope, receive, keep)
        start = next((m for m in messages if m["type"] == "http.response.start"), None)
        cookies = start is not None and any(name.lower() == b"set-cookie" for name, _ in start.get("headers", []))
        if start is None or start["status"] != 200 or cookies or len(self.entries) >= MAX_ENTRIES:
            return
        self.entries[key] = (start, [m for m in messages if m["type"] == "http.response.body"])
