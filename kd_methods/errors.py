"""Errors a user can cause. The CLI prints their message as one line on stderr and exits 2 (a full
disk, `DiskFull`: 5)."""
from __future__ import annotations


class UserError(Exception):
    """Bad input: the message names the problem and the fix."""


class ConfigError(UserError):
    """An experiment spec that cannot be run (unknown key, wrong type, impossible value)."""


class DataMissing(UserError):
    """A dataset is not on disk; the message says where we looked and how to get it."""


class CheckpointError(UserError):
    """A checkpoint or pretrained file that is truncated, corrupt or fails its checksum."""


class ResultsDamaged(UserError):
    """A results file (runs.csv) that does not parse: named with its line, and never rewritten."""


class DiskFull(Exception):
    """The disk filled up while writing: the half-written file is removed, complete files are kept."""


def exception_chain(error: BaseException | None):
    """`error`, then what it was raised from or while handling, and so on: torch reports a failure inside
    torch.save's write (a full disk, a Ctrl-C) as a RuntimeError raised while handling it."""
    while error is not None:
        yield error
        error = error.__cause__ or error.__context__


def disk_full(error: BaseException) -> OSError | None:
    """The out-of-space OSError (ENOSPC, EDQUOT) in `error`'s chain, if any."""
    import errno
    return next((e for e in exception_chain(error)
                 if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)), None)


class NumericalFault(Exception):
    """A NaN or inf loss: the run stops, keeps its last good checkpoint and records the failure."""


class RunsFailed(Exception):
    """Runs of a reproduction failed while the runs independent of them finished (`--executor ray`).
    `code`: the exit code of the gravest failure (1 a bug or a lost worker, 2 bad input, 3 diverged)."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code
