"""Errors a user can cause. The CLI prints them as one line on stderr and exits with code 2."""


class UserError(Exception):
    """A mistake in the input (missing file, bad image, wrong weights, bad flag): one line, exit code 2."""
