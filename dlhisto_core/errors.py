"""Exceptions that carry a message meant for the user."""


class InputError(ValueError):
    """Bad user input: an unreadable file, a wrong shape, an out-of-range parameter.

    The CLI prints the message as one line on stderr and exits non-zero, so the message
    must say what is wrong and, where it helps, what to do instead.
    """


def one_line(error: BaseException | str, limit: int = 300) -> str:
    """An exception's (or a text's) message on one line, cut to ``limit`` characters."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."
