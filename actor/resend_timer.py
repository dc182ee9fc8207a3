"""When to send an unacknowledged chunk again: a retransmission timer that follows the learner.

A fixed timeout resends every chunk that waits longer than it, and a learner that is slow to
ingest (the image learner computing trunk features for each new frame) keeps 32 chunks queued
for longer than 2 s: the 64 px image job sent 4,362 duplicate chunks beside 2,307 new ones during
its warmup. This is TCP's retransmission timer (RFC 6298, "Computing TCP's Retransmission
Timer"): a smoothed round-trip time and its variation from the acks (section 2), samples only
from chunks sent once (Karn's algorithm, section 3: an ack of a resent chunk may answer either
send), and the timeout doubled after each expiry until the next sample (section 5.5). The
bounds are ours: never below ``minimum`` (the configured ``resend_after``; RFC 6298 asks 1 s) and
never above ``maximum`` (a dead learner is still asked again within it).
"""

from __future__ import annotations

ALPHA = 1 / 8  # RFC 6298 section 2: the smoothing gains and the variance's weight
BETA = 1 / 4
K = 4


class ResendTimer:
    def __init__(self, minimum: float, maximum: float) -> None:
        if not 0 < minimum <= maximum:
            raise ValueError("need 0 < minimum <= maximum")
        self.minimum, self.maximum = float(minimum), float(maximum)
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.timeout = self.minimum  # RTO; RFC 6298's initial 1 s is our configured minimum

    def sample(self, rtt: float) -> None:
        """An ack of a chunk sent once, ``rtt`` s after it was sent (RFC 6298 2.2-2.3)."""
        rtt = max(float(rtt), 0.0)
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = (1 - BETA) * self.rttvar + BETA * abs(self.srtt - rtt)
            self.srtt = (1 - ALPHA) * self.srtt + ALPHA * rtt
        self.timeout = min(max(self.srtt + K * self.rttvar, self.minimum), self.maximum)

    def expired(self) -> None:
        """A chunk went unanswered for ``timeout``: back off (RFC 6298 5.5)."""
        self.timeout = min(2 * self.timeout, self.maximum)
