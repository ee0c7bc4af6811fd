"""Signals: SIGTERM (a scheduler's pre-emption) is handled like Ctrl-C."""

from __future__ import annotations

import signal


def sigterm_as_interrupt() -> None:
    """SIGTERM (a scheduler's pre-emption) behaves like Ctrl-C: close the trial's run, then leave."""

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)


