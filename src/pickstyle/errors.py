"""The one exception type for bad user input: the CLI prints its message and exits with code 2."""

SEED_LIMIT = 2**64  # torch's generators take seeds in [0, 2^64)


class PickStyleError(ValueError):
    """Bad input (a file, key or value at fault), with a one-line message that names it."""


def one_line(err: BaseException, limit: int = 200) -> str:
    """A library exception's reason on one line, at most `limit` characters (OSError: its strerror)."""
    text = " ".join(str(getattr(err, "strerror", None) or err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
