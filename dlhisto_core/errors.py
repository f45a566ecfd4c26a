"""Exceptions that carry a message meant for the user."""


class InputError(ValueError):
    """Bad user input: an unreadable file, a wrong shape, an out-of-range parameter.

    The CLI prints the message as one line on stderr and exits non-zero, so the message
    must say what is wrong and, where it helps, what to do instead.
    """
