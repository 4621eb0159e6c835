"""The one exception family of the harness.

Every error the harness raises derives from KpoolError. An error caused by the allocator carries the
allocator's own words in `text` (kp_last_error() or the text of the event it recorded).

`exit_code` is what `kpool` exits with when the error reaches the command line: 1 for a failure of the
work itself, 2 for a mistake in what the user asked for (a bad argument, configuration or workload file),
the code argparse uses for usage errors.
"""

from __future__ import annotations


class KpoolError(Exception):
    """Base of every harness error. `text` is the allocator's message, "" when there is none."""

    exit_code: int = 1

    def __init__(self, message: str, text: str = "") -> None:
        super().__init__(f"{message}: {text}" if text else message)
        self.text = text


class UsageError(KpoolError):
    """The command line asked for something impossible: names the bad value and what was expected."""

    exit_code = 2


class ConfigError(KpoolError):
    """A configuration (a setting, KPOOL_CONF, a workload value) is invalid: names the value and the rule."""

    exit_code = 2


class ArgumentError(KpoolError, ValueError):
    """A value passed to the binding that C cannot take (an integer outside its C type, a string with NUL):
    names the argument, the value and the range. Also a ValueError, as Python's own functions raise."""

    exit_code = 2


class ArgumentTypeError(ArgumentError, TypeError):
    """An argument of the wrong type (a string for a size...). Also a TypeError."""


class LibraryError(KpoolError):
    """libkpool could not be found or loaded."""


class BuildError(KpoolError):
    """A variant of libkpool could not be built."""


class ConfError(ConfigError):
    """kp_create refused the configuration; `text` names the bad key and value."""


class AllocError(KpoolError):
    """An allocation returned NULL (exhausted, impossible size or alignment, denied)."""


class FreeError(KpoolError):
    """kp_free returned a negative code: `code` is the number, `code_name` its KP_E* name."""

    def __init__(self, message: str, text: str, code: int, code_name: str) -> None:
        super().__init__(f"{message} ({code_name})", text)
        self.code = code
        self.code_name = code_name


class DeniedError(KpoolError):
    """The critical privilege was refused (bad or missing token)."""


class ClosedError(KpoolError):
    """The pool was used after close()."""
