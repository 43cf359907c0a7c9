"""Sphinx extension: the notebook client waits for a kernel's reply in polls of at most 1 s.

Why (seen in 2 of 5 fresh-clone test runs on this project's 2-core machines): a book notebook
sat idle for ~15 minutes, its kernel idle in its event loop, jupyter-book's client idle in
``epoll``, and then went on and the build passed (so no cell timed out). What fits all of it:
nbclient waits for a cell's reply with ONE ``get_msg(timeout=cell timeout)`` (``execute.timeout``:
900 s), and the asyncio client polls ZeroMQ's edge-triggered socket descriptor. When the wake-up
for a reply that has already arrived is missed, pyzmq reads the reply only in the non-blocking
poll it makes when the timeout fires: after the rest of the 900 s, with no error. The stalled
notebook took 900 s + its usual 16 s. (A loop of 250 notebook runs here did not reproduce it.)

Slicing every wait into polls of at most ``SLICE_S`` bounds what a missed wake-up costs at
``SLICE_S``; nothing else changes (``Empty`` still comes at the caller's deadline, ``None``
still waits for ever). Loaded by the book's ``_config.yml`` (``sphinx.local_extensions``), so
``make book`` and the smoke build in ``make test`` run with it; tests/conftest.py installs it
for the notebook clients the tests start themselves. The build's report line counts the
messages read more than ``LATE_S`` after the kernel sent them (their header's date) while the
client was already waiting: each one a missed wake-up that the slices caught.
"""

from __future__ import annotations

import functools
import time
from datetime import datetime
from queue import Empty

SLICE_S = 1.0
LATE_S = 0.5  # read this long after the kernel sent it, while we were polling: a missed wake-up
# what the build's report prints; the largest lag of the messages sent while a call waited
READS = {"messages": 0, "late": 0, "largest_lag_s": 0.0}


def _now(tz) -> datetime:
    return datetime.now(tz)


def lag_s(msg: dict) -> float | None:
    """Seconds from the kernel's send (its header's ``date``) to now; None without a date."""
    sent = msg.get("header", {}).get("date")
    if not isinstance(sent, datetime):
        return None
    return (_now(sent.tzinfo) - sent).total_seconds()


def _count(msg: dict, waited_s: float) -> None:
    """A message is late if it was sent more than ``LATE_S`` before it was read while this call
    was already waiting (``waited_s`` > lag): a wake-up was missed. Messages that were queued
    before the call (e.g. the extra kernel_info replies of a kernel's start) are not."""
    READS["messages"] += 1
    lag = lag_s(msg)
    if lag is not None and lag < waited_s:  # sent while we waited
        READS["largest_lag_s"] = max(READS["largest_lag_s"], lag)
        READS["late"] += lag > LATE_S


def sliced(get_msg, slice_s: float = SLICE_S):
    """``get_msg(self, timeout)`` as consecutive polls of at most ``slice_s`` seconds."""

    @functools.wraps(get_msg)
    async def get_msg_sliced(self, timeout: float | None = None):
        called = time.monotonic()
        deadline = None if timeout is None else called + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                msg = await get_msg(self, timeout=slice_s if left is None else min(slice_s, left))
            except Empty:
                if left is not None and left <= slice_s:
                    raise
                continue
            _count(msg, time.monotonic() - called)
            return msg

    get_msg_sliced.sliced = True
    return get_msg_sliced


def install(slice_s: float = SLICE_S) -> None:
    """Slice the waits of jupyter_client's asyncio channels (nbclient's); idempotent."""
    from jupyter_client.channels import AsyncZMQSocketChannel

    if not getattr(AsyncZMQSocketChannel.get_msg, "sliced", False):
        AsyncZMQSocketChannel.get_msg = sliced(AsyncZMQSocketChannel.get_msg, slice_s)


def _report(app, exception) -> None:
    from sphinx.util import logging

    logging.getLogger(__name__).info(
        f"kernel_waits: {READS['late']} of {READS['messages']} kernel messages read more than "
        f"{LATE_S:g} s after the kernel sent them (largest lag {READS['largest_lag_s']:.3f} s; "
        f"waits are {SLICE_S:g} s polls, so a missed wake-up costs at most that)")


def setup(app):
    install()
    app.connect("build-finished", _report)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
