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
for the notebook clients the tests start themselves.
"""

from __future__ import annotations

import functools
import time
from queue import Empty

SLICE_S = 1.0
LATE = {"replies": 0}  # messages read when a slice ran out: a missed wake-up, or a coincidence


def sliced(get_msg, slice_s: float = SLICE_S):
    """``get_msg(self, timeout)`` as consecutive polls of at most ``slice_s`` seconds."""

    @functools.wraps(get_msg)
    async def get_msg_sliced(self, timeout: float | None = None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            wait = slice_s if left is None else min(slice_s, left)
            start = time.monotonic()
            try:
                msg = await get_msg(self, timeout=wait)
            except Empty:
                if left is not None and left <= slice_s:
                    raise
                continue
            if wait > 0 and time.monotonic() - start >= 0.99 * wait:
                LATE["replies"] += 1
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
        f"kernel_waits: {LATE['replies']} kernel messages read only when a {SLICE_S:g} s poll "
        f"ran out (a missed wake-up, or a message arriving just then; unsliced, a missed "
        f"wake-up waits for the whole timeout)")


def setup(app):
    install()
    app.connect("build-finished", _report)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
