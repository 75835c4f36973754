"""The error a user sees: one clear message, no traceback, non-zero exit from the CLI."""


class TickforgeError(Exception):
    """Base of every error caused by input, configuration or environment rather than a bug."""


class InputError(TickforgeError, ValueError):
    """Bad input data (file, frame, argument); the message says what and where."""
