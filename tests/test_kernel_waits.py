"""book/_ext/kernel_waits.py: a message whose wake-up was missed is read within one slice.

The fake channel below behaves as a pyzmq asyncio poll whose wake-up is missed: it notices a
message only when its own timeout runs out (as pyzmq's final non-blocking poll does). Time is a
virtual clock, advanced by the waits, so nothing here depends on this machine's speed; the
messages carry the kernel's send time in their header, as jupyter_client's do.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from queue import Empty

import kernel_waits  # book/_ext, on the path from tests/conftest.py (which installs it)
import pytest

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


class Clock:
    def __init__(self):
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def wall(self, tz) -> datetime:
        return EPOCH + timedelta(seconds=self.now)


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(kernel_waits.time, "monotonic", c.monotonic)
    monkeypatch.setattr(kernel_waits, "_now", c.wall)
    monkeypatch.setattr(kernel_waits, "READS", {"messages": 0, "late": 0, "largest_lag_s": 0.0})
    return c


def message(sent_s: float) -> dict:
    return {"header": {"msg_id": "reply", "date": EPOCH + timedelta(seconds=sent_s)}}


def missed_wakeups(clock: Clock, arrival: float | None):
    """``get_msg(self, timeout)`` that sees a message (sent at ``arrival``) only at its timeout."""
    waits = []

    async def get_msg(self, timeout=None):
        assert timeout is not None, "a sliced wait never polls without a timeout"
        waits.append(timeout)
        clock.now += timeout
        if arrival is not None and clock.now >= arrival:
            return message(arrival)
        raise Empty

    return get_msg, waits


def test_a_missed_wakeup_costs_one_slice_not_the_cell_timeout(clock):
    get_msg, waits = missed_wakeups(clock, arrival=2.25)
    msg = asyncio.run(kernel_waits.sliced(get_msg, 1.0)(None, timeout=900))
    assert msg == message(2.25) and clock.now == 3.0 and waits == [1.0, 1.0, 1.0]
    assert kernel_waits.READS == {"messages": 1, "late": 1, "largest_lag_s": 0.75}
    # unsliced, the same channel reads the message when the 900 s poll runs out
    clock.now = 0.0
    assert asyncio.run(get_msg(None, timeout=900)) == message(2.25) and clock.now == 900


def test_a_message_queued_before_the_call_is_not_late(clock):
    async def queued(self, timeout=None):  # a stale kernel_info reply, sent 3 s ago
        return message(clock.now - 3.0)

    clock.now = 10.0
    asyncio.run(kernel_waits.sliced(queued, 1.0)(None, timeout=5))
    assert kernel_waits.READS == {"messages": 1, "late": 0, "largest_lag_s": 0.0}


def test_no_reply_raises_empty_at_the_callers_deadline(clock):
    get_msg, waits = missed_wakeups(clock, arrival=None)
    with pytest.raises(Empty):
        asyncio.run(kernel_waits.sliced(get_msg, 1.0)(None, timeout=3.5))
    assert clock.now == 3.5 and waits == [1.0, 1.0, 1.0, 0.5]
    assert kernel_waits.READS["messages"] == 0


def test_zero_and_no_timeout_keep_their_meaning(clock):
    get_msg, waits = missed_wakeups(clock, arrival=None)
    with pytest.raises(Empty):  # timeout 0: one non-blocking poll
        asyncio.run(kernel_waits.sliced(get_msg, 1.0)(None, timeout=0))
    assert waits == [0.0]
    get_msg, waits = missed_wakeups(clock, arrival=7.2)  # None: wait for ever, slice by slice
    assert asyncio.run(kernel_waits.sliced(get_msg, 1.0)(None)) == message(7.2)
    assert waits == [1.0] * 8 and clock.now == 8.0


def test_lag_of_a_real_jupyter_client_message():
    from jupyter_client.session import Session

    session = Session()
    msg = session.msg("status", {"execution_state": "idle"})
    wire = session.serialize(msg)  # as the kernel sends it; the client deserialises the dates
    _, parts = session.feed_identities(wire)
    received = session.deserialize(parts)
    lag = kernel_waits.lag_s(received)
    assert lag is not None and 0 <= lag < 60
    assert kernel_waits.lag_s({"header": {}}) is None


def test_install_patches_jupyter_clients_asyncio_channel_once():
    from jupyter_client.channels import AsyncZMQSocketChannel

    kernel_waits.install()  # tests/conftest.py installed it already: a second call changes nothing
    patched = AsyncZMQSocketChannel.get_msg
    kernel_waits.install()
    assert patched.sliced and AsyncZMQSocketChannel.get_msg is patched
    assert not getattr(patched.__wrapped__, "sliced", False)


def test_the_book_loads_the_extension():
    import yaml

    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "_config.yml").read_text())
    assert config["sphinx"]["local_extensions"] == {"kernel_waits": "book/_ext"}
