"""The server's guards against a class's traffic, as ASGI middleware: the upload quota, a plain "server busy" answer
for a full queue, and rate limits on queue joins."""

from __future__ import annotations

import collections
import json
import os
import time

import gradio as gr
from starlette.responses import PlainTextResponse

from dpmpp.app.classroom import is_loopback

INLINE_BYTES = 64 << 10  # a queue request larger than this carries files inline (base64 images): counted as an upload


INLINE_KEPT_S = 3600  # Gradio's cache deletes files an hour after they were written (dpmpp/app/layout.py)


class UploadQuota:
    """ASGI middleware: refuses uploads (HTTP 507) while what visitors have sent, and the cache has not yet deleted,
    fills `quota_bytes`. Uploads are `/upload` requests, counted by their files (recounted at most every few
    seconds), and queue requests over INLINE_BYTES, whose inline base64 files Gradio decodes into its cache: those
    are counted by request size for as long as the cache keeps files."""

    def __init__(self, app, demo: gr.Blocks, quota_bytes: int) -> None:
        self.app, self.demo, self.quota = app, demo, quota_bytes
        self._used, self._counted = 0, 0.0
        self._inline: collections.deque[tuple[float, int]] = collections.deque()  # (arrived, bytes)

    def inline_bytes(self) -> int:
        while self._inline and time.monotonic() - self._inline[0][0] > INLINE_KEPT_S:
            self._inline.popleft()
        return sum(size for _, size in self._inline)

    def used(self) -> int:
        if time.monotonic() - self._counted > 2.0:
            total = 0
            for name in list(getattr(self.demo, "upload_file_set", ())):
                try:
                    total += os.stat(name).st_size
                except OSError:
                    continue
            self._used, self._counted = total, time.monotonic()
        return self._used

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST":
            length = dict(scope.get("headers") or []).get(b"content-length", b"0")
            incoming = int(length) if length.isdigit() else 0
            inline = scope["path"].endswith("/queue/join") and incoming > INLINE_BYTES
            if not (scope["path"].endswith("/upload") or inline):
                await self.app(scope, receive, send)
                return
            if self.used() + self.inline_bytes() + incoming > self.quota:
                response = PlainTextResponse("The server's upload space is full; try again later.", status_code=507)
                await response(scope, receive, send)
                return
            if inline:
                self._inline.append((time.monotonic(), incoming))
            else:
                self._used += incoming  # counted until the next recount finds the file itself
        await self.app(scope, receive, send)


BUSY = "The server is busy: too many requests are waiting. Try again in a few seconds; nothing was lost."


class BusyMessage:
    """ASGI middleware: the queue's overflow answer (HTTP 503 "Queue is full. Max size is …") says, in plain words,
    that the server is busy and that trying again is safe."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].endswith("/queue/join"):
            await self.app(scope, receive, send)
            return
        held: dict = {}

        async def rewrite(message):
            if message["type"] == "http.response.start" and message["status"] == 503:
                held["start"] = message  # sent with the new body's length
                return
            if "start" in held and message["type"] == "http.response.body":
                body = json.dumps({"detail": BUSY}).encode()
                headers = [(k, v) for k, v in held["start"].get("headers", []) if k.lower() != b"content-length"]
                await send({**held["start"], "headers": [*headers, (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
            await send(message)

        await self.app(scope, receive, rewrite)


SLOW_DOWN = "Too many requests from this page at once: wait a second and try again."


class RateLimit:
    """ASGI middleware: token buckets on queue joins, one per page session and one per visitor address (loopback
    exempt, so that a teacher's own tools and the load benchmark are not counted as one visitor). A click in the
    page sends a few joins (an event and its follow-ups); a flood from one page or one machine is answered 429 before
    it reaches the queue, so that it cannot fill the queue for the class."""

    def __init__(self, app, per_session=(40, 8.0), per_address=(200, 40.0), clock=time.monotonic) -> None:
        self.app, self.clock = app, clock
        self.limits = {"session": per_session, "address": per_address}
        self.buckets: dict[tuple[str, str], tuple[float, float]] = {}  # (kind, who) -> (tokens, time)

    def _take(self, kind: str, who: str) -> bool:
        capacity, rate = self.limits[kind]
        now = self.clock()
        tokens, then = self.buckets.get((kind, who), (capacity, now))
        tokens = min(capacity, tokens + (now - then) * rate)
        if len(self.buckets) > 10000:  # bounded: forget full buckets
            self.buckets = {k: v for k, v in self.buckets.items() if v[0] < self.limits[k[0]][0]}
        if tokens < 1:
            self.buckets[(kind, who)] = (tokens, now)
            return False
        self.buckets[(kind, who)] = (tokens - 1, now)
        return True

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].endswith("/queue/join"):
            await self.app(scope, receive, send)
            return
        chunks, more = [], True
        while more:  # the join's JSON body (small: Gradio caps request bodies)
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        try:
            session = str(json.loads(body).get("session_hash", ""))[:64]
        except (ValueError, AttributeError):
            session = ""
        address = (scope.get("client") or ("", 0))[0]
        allowed = self._take("session", session)
        if allowed and address and not is_loopback(address):
            allowed = self._take("address", address)
        if not allowed:
            await PlainTextResponse(json.dumps({"detail": SLOW_DOWN}), status_code=429, media_type="application/json")(
                scope, receive, send
            )
            return
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
