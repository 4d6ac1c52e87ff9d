"""The one exception type for user mistakes: the CLI prints it as a single line and exits 2."""


class ZooError(Exception):
    """A problem the user can fix (bad path, bad option); the message says what, where and how."""
