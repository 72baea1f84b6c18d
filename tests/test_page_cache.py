"""The page cache serves the first 200 answer of `/` and `/config` again, and nothing else; a full queue says the
server is busy."""

import asyncio
import json

from dpmpp.app.guards import BUSY, BusyMessage, RateLimit, UploadQuota
from dpmpp.app.page_cache import PageCache


def fake_app(status=200, cookie=False):
    calls = []

    async def app(scope, receive, send):
        calls.append(scope["path"])
        headers = [(b"content-type", b"text/html")] + ([(b"set-cookie", b"a=b")] if cookie else [])
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": f"page {len(calls)}".encode(), "more_body": True})
        await send({"type": "http.response.body", "body": b"!"})

    return app, calls


def get(middleware, path="/", query=b"", host=b"127.0.0.1:7860", method="GET"):
    sent = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request"}

    scope = {"type": "http", "method": method, "path": path, "query_string": query, "headers": [(b"host", host)]}
    asyncio.run(middleware(scope, receive, send))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def test_the_page_and_config_are_built_once_per_host():
    app, calls = fake_app()
    cache = PageCache(app)
    assert get(cache) == get(cache) == (200, b"page 1!")
    assert get(cache, "/config") == get(cache, "/config") == (200, b"page 2!")
    assert get(cache, host=b"192.168.1.5:7860") == (200, b"page 3!")  # another way in: its own answer
    assert calls == ["/", "/config", "/"]


def test_queries_other_paths_methods_errors_and_cookies_pass_through():
    app, calls = fake_app()
    cache = PageCache(app)
    get(cache, query=b"teacher=abc"), get(cache, query=b"teacher=abc")
    get(cache, "/gradio_api/info"), get(cache, "/gradio_api/info")
    get(cache, method="POST"), get(cache, method="POST")
    assert len(calls) == 6
    for status, cookie in ((500, False), (200, True)):
        app, calls = fake_app(status, cookie)
        cache = PageCache(app)
        get(cache), get(cache)
        assert len(calls) == 2 and not cache.entries


def test_a_full_queue_answers_that_the_server_is_busy_in_plain_words():
    async def full(scope, receive, send):
        body = json.dumps({"detail": "Queue is full. Max size is 64 and size is 64."}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    sent = []

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/gradio_api/queue/join", "headers": []}
    asyncio.run(BusyMessage(full)(scope, None, send))
    body = sent[1]["body"]
    assert sent[0]["status"] == 503 and json.loads(body) == {"detail": BUSY}
    assert dict(sent[0]["headers"])[b"content-length"] == str(len(body)).encode()
    assert "Max size" not in body.decode()


def join(limit, session, address="192.168.1.7"):
    calls = []

    async def app(scope, receive, send):
        calls.append(json.loads((await receive())["body"]))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    sent = []

    async def send(message):
        sent.append(message)

    body = json.dumps({"session_hash": session, "fn_index": 3}).encode()
    messages = iter([{"type": "http.request", "body": body[:10], "more_body": True},
                     {"type": "http.request", "body": body[10:]}])  # fmt: skip

    async def receive():
        return next(messages)

    limit.app = app
    scope = {"type": "http", "method": "POST", "path": "/gradio_api/queue/join", "client": (address, 5000)}
    asyncio.run(limit(scope, receive, send))
    assert calls in ([], [{"session_hash": session, "fn_index": 3}])  # the body reaches the app whole
    return sent[0]["status"]


def test_a_flood_from_one_page_or_one_machine_is_slowed_and_others_are_not():
    now = [0.0]
    limit = RateLimit(None, per_session=(5, 1.0), per_address=(8, 1.0), clock=lambda: now[0])
    assert [join(limit, "a") for _ in range(7)] == [200] * 5 + [429] * 2
    assert [join(limit, "b") for _ in range(4)] == [200] * 3 + [429]  # same machine: its 8 are spent
    assert join(limit, "c", address="192.168.1.8") == 200  # another student
    assert all(join(limit, f"s{i}", address="127.0.0.1") == 200 for i in range(20))  # loopback: per page only
    now[0] += 2.0
    assert join(limit, "a") == 200  # refilled


def test_queue_requests_carrying_files_inline_count_against_the_upload_quota():
    calls = []

    async def app(scope, receive, send):
        calls.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    class Demo:
        upload_file_set: set = set()

    quota = UploadQuota(app, demo=Demo(), quota_bytes=300_000)

    def post(size):
        sent = []

        async def send(message):
            sent.append(message)

        headers = [(b"content-length", str(size).encode())]
        scope = {"type": "http", "method": "POST", "path": "/gradio_api/queue/join", "headers": headers}
        asyncio.run(quota(scope, None, send))
        return sent[0]["status"]

    assert [post(1_000) for _ in range(5)] == [200] * 5  # clicks: not uploads, never counted
    assert post(200_000) == 200  # a base64 image inline
    assert post(200_000) == 507  # the second would pass the quota
    assert post(1_000) == 200 and len(calls) == 7
