"""What a replica says when the shared limit backend is unreachable (the ModelPolicy condition's text)."""

from __future__ import annotations

from stoa_gateway.shared_limits import SharedLimits


async def test_an_unreachable_backend_says_why_even_when_the_error_has_no_text() -> None:
    """A frozen Redis times out with an empty ``TimeoutError()``: the reason must still say what happened."""
    limits = SharedLimits("redis://127.0.0.1:6390/0", replicas=2)  # never connects: nothing is awaited
    limits.connected = True
    limits._down(TimeoutError())
    assert limits.reason == "cannot reach redis://127.0.0.1:6390/0: no answer within 1s"
    assert limits.status()["shared"] is False
    limits.connected = True
    limits._down(ConnectionRefusedError(111, "Connection refused"))
    assert limits.reason == (
        "cannot reach redis://127.0.0.1:6390/0: ConnectionRefusedError: [Errno 111] Connection refused"
    )
