"""Errors about the user's input, which the command line reports in one line."""


class InputError(ValueError):
    """Bad input (a file, a line, an argument); the message names where and what."""
