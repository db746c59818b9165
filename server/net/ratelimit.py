"""Token buckets: how the networking layer says "at most this often" to whoever is sending. Sans-IO.

A bucket holds up to ``burst`` tokens and gains ``rate`` of them per second; an action that costs one token is
allowed while one is left. So a sender gets a burst at once and then a steady rate, and one that pauses gets
its burst back. The caller passes the time (seconds on a monotonic clock): no clock is read here, and tests
drive a bucket through any sequence of instants.

``TokenBucket`` is one bucket (the echo server's per-peer limits, a TFTP transfer's ERROR 5 replies);
``BucketTable`` keeps one per key (a source address) in bounded memory (the TFTP server's budget for new
transfers per source).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Hashable


class TokenBucket:
    """Up to ``burst`` tokens, ``rate`` more each second; starts full."""

    __slots__ = ("at", "burst", "rate", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if not (rate > 0 and math.isfinite(rate) and burst > 0 and math.isfinite(burst)):
            raise ValueError(f"rate and burst must be positive finite numbers, got {rate!r} and {burst!r}")
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.at = now  # when ``tokens`` was last brought up to date

    def refill(self, now: float) -> None:
        """Add what ``now - at`` earned. A clock that steps back gives nothing and takes nothing."""
        elapsed = now - self.at
        if elapsed > 0:
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
            self.at = now

    def has(self, now: float, cost: float = 1.0) -> bool:
        """Whether ``cost`` tokens are there (spending nothing): for an action that needs two buckets' consent."""
        self.refill(now)
        return self.tokens >= cost

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Spend ``cost`` tokens if there are that many; return whether they were spent."""
        if not self.has(now, cost):
            return False
        self.tokens -= cost
        return True

    def give_back(self, cost: float = 1.0) -> None:
        """Return tokens spent on something that turned out to be harmless (never above ``burst``)."""
        self.tokens = min(self.burst, self.tokens + cost)

    def full_at(self) -> float:
        """When the bucket will be full again if nothing is spent: after that, forgetting it loses nothing."""
        return self.at + (self.burst - self.tokens) / self.rate


class BucketTable:
    """One ``TokenBucket`` per key, at most ``max_keys`` of them. Sans-IO.

    A bucket that would be full by now is forgotten (a new one starts full, so nothing is lost); buckets are
    kept in the order they were last used, so one look at the oldest finds whether any can go. When the table
    is full of buckets still refilling, the least recently used one is forgotten anyway: the table stays
    bounded and a newcomer is never refused for room. That hands the forgotten key a fresh burst, but only
    after ``max_keys`` other keys were used since it was: one key gets at most ``burst`` extra tokens per
    ``max_keys`` others, a bound that grows with the table.
    """

    def __init__(self, rate: float, burst: float, max_keys: int) -> None:
        TokenBucket(rate, burst, 0.0)  # checks the numbers once, here, rather than at the first use
        if max_keys < 1:
            raise ValueError(f"max_keys must be at least 1, got {max_keys!r}")
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[Hashable, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: Hashable, now: float, cost: float = 1.0) -> bool:
        """Spend ``cost`` of ``key``'s tokens if it has them; return whether it did."""
        return self._bucket(key, now).take(now, cost)

    def give_back(self, key: Hashable, cost: float = 1.0) -> None:
        """Return tokens to ``key`` (a bucket already forgotten is full: nothing to return)."""
        bucket = self._buckets.get(key)
        if bucket is not None:
            bucket.give_back(cost)

    def _bucket(self, key: Hashable, now: float) -> TokenBucket:
        buckets = self._buckets
        if buckets:
            oldest = next(iter(buckets.values()))
            if oldest.full_at() <= now or (len(buckets) >= self.max_keys and key not in buckets):
                buckets.popitem(last=False)
        bucket = buckets.get(key)
        if bucket is None:
            bucket = buckets[key] = TokenBucket(self.rate, self.burst, now)
        else:
            buckets.move_to_end(key)
        return bucket
