"""The engine's exceptions: bad input, which the CLI reports in one line, and results that are not crashes."""

from __future__ import annotations


class ConfigError(ValueError):
    """Bad user input: reported as one line with exit code 2, never a traceback."""


class SettingWarning(UserWarning):
    """A setting that is legal but surprising (momentum with Adam, threads beyond the cores): one line, no stop."""


class DataError(ConfigError):
    """Missing or unreadable data: one line saying where we looked and how to get it."""


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite: a result (a bad region of the search), not a crash."""

    def __init__(self, message: str, iteration: int = 0):
        super().__init__(message)
        self.iteration = iteration


class StopSearch(Exception):
    """Raised by a callback's `on_round_end` to end the search after the current round."""

    def __init__(self, reason: str = "stopped"):
        super().__init__(reason)
        self.reason = reason


class RunFailed(RuntimeError):
    """A run could not finish for a reason outside any one trial (a worker process died): one line, exit 1."""


_AGAIN = ("free some space (or point it elsewhere) and run the same command again: finished trials are kept, "
          "interrupted ones are queued again")


class DiskFull(RunFailed):
    """No space left where ltstudy writes (the cache, the journal): the run stops with one line naming the place."""

    @classmethod
    def no_space(cls, where: object) -> DiskFull:
        return cls(f"no space left on the device under {where}; {_AGAIN}")

    @classmethod
    def check(cls, exc: BaseException, where: object) -> None:
        """Raise DiskFull for a full disk, a quota or a file-size limit (from `exc`); any other error is left to the
        caller. (A file-size limit, `ulimit -f`, refuses a write with EFBIG where a full disk says ENOSPC.)"""
        import errno

        if isinstance(exc, OSError) and exc.errno == errno.EFBIG:
            raise cls(f"a file under {where} reached the largest size allowed (ulimit -f, or the file system's "
                      f"limit); {_AGAIN}") from exc
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise cls.no_space(where) from exc
