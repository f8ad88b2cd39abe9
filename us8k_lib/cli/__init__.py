"""The command line, ``python -m us8k_lib COMMAND``: every command a thin layer over library functions.

:mod:`.parser` builds the parser and runs a command (its exit codes, its one-line errors);
:mod:`.flags` checks each flag's value as it is parsed, and :mod:`.training_flags` holds the
training flags ``train`` and ``crossval`` share; each command's glue is one module: :mod:`.train`,
:mod:`.crossval`, :mod:`.predict`, and :mod:`.data` (``make-mini``, ``download``, ``validate``).
"""

from us8k_lib.cli.parser import main

__all__ = ["main"]
