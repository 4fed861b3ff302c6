"""Find secrets in a byte stream (an image artifact, a rootfs): Aho-Corasick over every needle.

An identity has a few hundred needles (each line of each private key, the token, the VRRP
password, node passwords, registry logins) and an artifact is hundreds of megabytes: one pass of
an automaton (pyahocorasick, C) instead of one `find` per needle. Bytes are searched as latin-1
text, which maps every byte to one character, so offsets and ASCII needles match exactly.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import ahocorasick


@dataclass(frozen=True)
class Hit:
    what: str  # which secret (never the secret itself)
    offset: int  # where its first byte is in the stream


def scan(chunks: Iterable[bytes], needles: Iterable[tuple[str, str]]) -> list[Hit]:
    """Every occurrence of every needle in the concatenated chunks (across chunk boundaries
    too, each occurrence once)."""
    labels: dict[str, list[str]] = {}
    for what, text in needles:
        if text:
            # Several labels may share one text (a token that is also a password): keep all.
            labels.setdefault(text, []).append(what)
    if not labels:
        return []
    auto = ahocorasick.Automaton()
    for text, whats in labels.items():
        auto.add_word(text, (len(text), tuple(whats)))
    auto.make_automaton()
    longest = max(len(t) for t in labels)
    hits: list[Hit] = []
    tail = ""
    base = 0  # stream offset of window[0]
    for chunk in chunks:
        window = tail + chunk.decode("latin-1")
        for end, (length, whats) in auto.iter(window):
            # An occurrence ending inside the carried-over tail was found in the last window.
            if end >= len(tail):
                hits.extend(Hit(what, base + end - length + 1) for what in whats)
        keep = min(len(window), longest - 1)
        base += len(window) - keep
        tail = window[len(window) - keep :]
    return hits
