"""Output that may close under us: `ltstudy run … | head -3` stops the printing, never the study.

Python ignores SIGPIPE, so a write to a pipe whose reader has gone raises
BrokenPipeError wherever it happens: in a progress line in the middle of a
trial it failed the trial. `closable_output()` wraps stdout and stderr so that
the first such error points the file descriptor at /dev/null (what is still
buffered, and anything written later, by Python, C code or a forked worker,
goes nowhere) and the command carries on.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any


class ClosableOutput:
    """A text stream that swallows a broken pipe once, silencing its file descriptor for good."""

    def __init__(self, stream: Any):
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._silence()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._silence()

    def _silence(self) -> None:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, self._stream.fileno())
            finally:
                os.close(devnull)
        except (OSError, ValueError):  # (a stream without a descriptor: nothing more can be done for it)
            pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def closable_output() -> Iterator[None]:
    """stdout and stderr wrapped in ClosableOutput while a command runs (put back afterwards)."""
    saved = sys.stdout, sys.stderr
    wrapped = sys.stdout, sys.stderr = ClosableOutput(sys.stdout), ClosableOutput(sys.stderr)
    try:
        yield
    finally:
        for stream in wrapped:  # (what is still buffered, here, not at exit where a broken pipe is a traceback)
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        sys.stdout, sys.stderr = saved
