"""Errors a user can cause. The CLI prints them as one line on stderr and exits with code 2."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the input (missing file, bad image, wrong weights, bad flag): one line, exit code 2."""


def one_line(e: BaseException, limit: int | None = None) -> str:
    """An exception's message on one line (libraries' messages span lines), cut to ``limit`` characters."""
    text = " ".join(str(e).split())
    return (text[:limit] if limit else text) or type(e).__name__
