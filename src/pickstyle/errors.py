"""The one exception type for bad user input: the CLI prints its message and exits with code 2."""


class PickStyleError(ValueError):
    """Bad input (a file, key or value at fault), with a one-line message that names it."""
