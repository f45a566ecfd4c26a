"""Exceptions that carry a message meant for the user, and what else reaches their stderr."""

import contextlib
import warnings


class InputError(ValueError):
    """Bad user input: an unreadable file, a wrong shape, an out-of-range parameter.

    The CLI prints the message as one line on stderr and exits non-zero, so the message
    must say what is wrong and, where it helps, what to do instead.
    """


def one_line(error: BaseException | str, limit: int = 300) -> str:
    """An exception's (or a text's) message on one line, cut to ``limit`` characters."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


@contextlib.contextmanager
def quiet_libraries():
    """Keep the warnings of the libraries a step uses (NumPy casts, shapely, PyTorch's
    deprecations) off stderr, where Galaxy shows the user the step's one line."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
