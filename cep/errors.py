"""Errors that reach the user as one line (exit code 2), kept free of heavy imports so the CLI starts fast."""


class DataError(RuntimeError):
    """The data cannot be had; the message says where to put it or what to use instead."""


class UsageProblem(Exception):
    """Bad command-line input that is not a config field (one line)."""
