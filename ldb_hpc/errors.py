"""Exceptions that the CLI turns into a one-line ``error: …`` and exit code 2."""


class InputError(Exception):
    """Bad user input: a file, an option or a structure the tool cannot accept.

    The message is shown to the user as is, after ``error: ``; keep it one line and say what to do.
    """


class OutputError(InputError):
    """The output cannot be written where asked (exists without --overwrite, unwritable, ...)."""


class FormatLimitError(InputError):
    """The structure does not fit the chosen output format (e.g. residue numbers or chain IDs a PDB file cannot
    hold); another format (MDTraj-HDF5) can take it."""
