"""The two errors a job reports without a traceback (cli.py turns them into exit codes 2 and 3)."""


class InputError(Exception):
    """Bad user input: the message names the file or key and says what to do."""


class OutputConflict(Exception):
    """A newer run of the same job owns the output; this job's result is discarded."""


def few_names(paths: list, n: int = 5) -> str:
    """The first `n` of a list of files or names, for a message, and how many more there are."""
    shown = ", ".join(str(p) for p in paths[:n])
    return shown + (f" and {len(paths) - n} more" if len(paths) > n else "")
