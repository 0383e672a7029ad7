"""The package's own failures that the user, not the code, has to act on.

``python -m dpm_lab`` reports these, like bad values (``ValueError``), in one line with exit
status 2; any other exception is a bug or a failure of the machine (CUDA out of memory, a
Torch-Pruning internal) and keeps its traceback.
"""


class DpmLabError(RuntimeError):
    """A state of the user's files or jobs that stops the command, explained in its message with
    what to do (a record in the way, sweep workers that failed). A ``RuntimeError``, so code that
    caught those before still does."""
