"""The one exception type for problems a user can cause and fix.

The CLI prints ``str(error)`` on one line and exits non-zero, so the message must
name the file (or option) at fault and say what to do about it.
"""


class VafusionError(Exception):
    """A user-fixable problem: bad path, malformed input, incompatible cache."""
