"""Bounded memos: what was found valid once is remembered, so that a request repeating it costs one lookup.

The server checks the same few things over and over: the field names and the Host its clients send, the statuses
and header fields its application answers with, the environ key of each request header. Checking each once and
remembering the verdict saves most of that work. But the keys come from outside (clients choose names and hosts;
an application may copy request data into its headers), so a memo must never become a way to hold the server's
memory or to spoil its speed for good. Every memo is bounded twice:

- a key longer than ``KEY_LIMIT`` is checked every time and never kept: real field names and hosts are short,
  while a thousand 64 KiB names, each kept with its lower-case copy, would hold almost 200 MiB for as long as
  the process lives;
- a full memo (``SIZE`` entries) starts over, so that junk sent first cannot keep the real names out for ever:
  it costs a few checks, and the next requests fill the memo again with what they repeat.

No lock: a ``dict`` lookup, store or clear is atomic under the GIL, and a lookup that races with a clear misses,
which only means one more check.
"""

from __future__ import annotations

from collections.abc import Sized
from typing import TypeVar

SIZE = 1000
KEY_LIMIT = 256

K = TypeVar("K", bound=Sized)
V = TypeVar("V")


def remember(memo: dict[K, V], key: K, value: V) -> None:
    """``memo[key] = value``, unless ``key`` is too long to keep; a full ``memo`` is emptied first."""
    if len(key) <= KEY_LIMIT:
        if len(memo) >= SIZE:
            memo.clear()
        memo[key] = value
