"""The one error type the command line turns into a message and an exit code.

Library code below `cli` never exits and never imports typer: it raises an `EtlError` whose text is one
clear line for the user and whose `exit_code` says how the command ends. `cli` maps every command's
`EtlError` the same way (message to stderr, that exit code).
"""

from __future__ import annotations


class EtlError(Exception):
    """A failure to report to the user as one line; the command exits with `exit_code`."""

    exit_code = 1


class UsageError(EtlError):
    """Bad arguments, settings, inputs or OUT: refused before any work (exit 2)."""

    exit_code = 2


class MissingDependency(UsageError):
    """An optional package is not installed; the message says which extra to install."""


__all__ = ["EtlError", "UsageError", "MissingDependency"]
