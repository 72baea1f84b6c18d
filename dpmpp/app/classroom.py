"""Who a visitor is, and what a class shares: teacher and students, idle sessions (guards.py: the server's guards).

In classroom mode every visitor can query, occlude, inspect, compare and export; training, stopping another
session's training, uploading checkpoints and loading unlisted folders are for the teacher, who opens the URL
printed at start (`?teacher=TOKEN`) or enters the token in the Model tab.
"""

from __future__ import annotations

import datetime
import ipaddress
import secrets
import time

import gradio as gr

from dpmpp.app.common import SETTINGS, logger

TEACHER_SESSIONS: set[str] = set()  # sessions that entered the teacher token


def is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def session_of(request: gr.Request | None) -> str | None:
    return getattr(request, "session_hash", None) if request is not None else None


def is_teacher(request: gr.Request | None) -> bool:
    """The teacher: a session that entered the token, a page opened with `?teacher=TOKEN`, or the server's own calls."""
    if request is None:
        return True
    if session_of(request) in TEACHER_SESSIONS:
        return True
    given = str((getattr(request, "query_params", None) or {}).get("teacher", "") or "")
    return bool(given) and secrets.compare_digest(given.encode(), SETTINGS["teacher_token"].encode())


def may_manage(request: gr.Request | None) -> bool:
    """Training, uploading checkpoints and loading unlisted folders: anyone outside classroom mode, else the teacher."""
    return not SETTINGS["classroom"] or is_teacher(request)


def require_manager(request: gr.Request | None, what: str) -> None:
    if not may_manage(request):
        raise gr.Error(f"In classroom mode only the teacher can {what}.")


def teacher_login(token: str, request: gr.Request | None = None):
    """The teacher's token unlocks training, uploads, other folders and stopping any training for this session."""
    given = str(token or "").strip()
    if not given or not secrets.compare_digest(given.encode(), SETTINGS["teacher_token"].encode()):
        raise gr.Error("That is not the teacher token printed when the server started.")
    if session_of(request) is not None:
        TEACHER_SESSIONS.add(session_of(request))
    return role_note(request), ""


def role_note(request: gr.Request | None = None) -> str:
    if not SETTINGS["classroom"]:
        return ""
    if is_teacher(request):
        return "**Classroom mode, teacher**: training, uploads and every folder are open to this session."
    return (
        "**Classroom mode**: query, occlude, inspect, compare and export freely. Training, uploading checkpoints and "
        "loading unlisted folders are for the teacher."
    )


def expire_idle_sessions(state_holder, idle_s: float, now: datetime.datetime | None = None) -> list[str]:
    """Drop every session unused for `idle_s` seconds, with everything it held (its view, images, chosen model);
    returns their ids. A visitor who comes back starts from the default view."""
    now = now or datetime.datetime.now()
    with state_holder.lock:
        idle = [s for s, used in list(state_holder.time_last_used.items()) if (now - used).total_seconds() > idle_s]
        for session in idle:
            state_holder.session_data.pop(session, None)
            state_holder.time_last_used.pop(session, None)
    TEACHER_SESSIONS.difference_update(idle)
    if idle:
        logger.info("dropped %d idle sessions", len(idle))
    return idle


def expire_sessions_forever(demo: gr.Blocks) -> None:
    idle_s = float(SETTINGS["idle_minutes"]) * 60
    while True:
        time.sleep(max(5.0, min(60.0, idle_s / 4)))
        if getattr(demo, "state_holder", None) is not None:
            expire_idle_sessions(demo.state_holder, idle_s)
