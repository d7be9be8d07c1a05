"""Comment ids as clients may send them back: validated before anything reaches Redis.

A comment id is a Redis stream id, ``<ms>-<seq>``, each part an unsigned 64-bit number
written in ASCII digits. Anything else (``\\d`` would let in Arabic-Indic or full-width
digits; 20 digits can exceed 2**64 - 1) makes Redis answer with an error, which the API
would report as "storage unavailable": so the API checks first and answers 400.
"""

from __future__ import annotations

U64_MAX = 2**64 - 1
_DIGITS = frozenset("0123456789")


def _u64(text: str) -> bool:
    return 0 < len(text) <= 20 and set(text) <= _DIGITS and int(text) <= U64_MAX


def comment_id_problem(text: str) -> str | None:
    """``None`` if ``text`` is a valid comment id, else what is wrong with it (for a
    400's detail)."""
    if len(text) > 41:
        return "comment id too long (at most 20 digits, '-', 20 digits)"
    ms, dash, seq = text.partition("-")
    if not dash or not ms or not seq:
        return "comment id must be <ms>-<seq>, e.g. 1700000000000-0"
    if not (set(ms) <= _DIGITS and set(seq) <= _DIGITS):
        return "comment id parts must be ASCII digits 0-9"
    if not (_u64(ms) and _u64(seq)):
        return f"comment id parts must each be at most {U64_MAX}"
    return None


def is_comment_id(text: str) -> bool:
    """Both parts are ASCII-digit numbers that fit in unsigned 64 bits."""
    return comment_id_problem(text) is None
