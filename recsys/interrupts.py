"""How a job treats SIGINT and SIGTERM.

Until a run starts its publish, both stop it: SIGINT as KeyboardInterrupt, SIGTERM as
`Terminated`, so the run records itself as failed and discards its staging file. From the
publish on they are held: the run replaces the served file and records it, then ends with
exit 0 and a warning. The served file has changed by then, and a non-zero exit would tell
cron the opposite of what happened. Handlers can only be set from the main thread; elsewhere
(a library caller's worker thread) these do nothing.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator

from recsys.errors import Terminated

log = logging.getLogger(__name__)
HELD = (signal.SIGINT, signal.SIGTERM)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def sigterm_stops(message: Callable[[], str]) -> Iterator[None]:
    """SIGTERM raises `Terminated(message())` here, as SIGINT raises KeyboardInterrupt, unless
    the process is already failing (then the failure in hand is what it records). A second
    SIGTERM ends the process at once."""
    if not _main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if sys.exc_info()[1] is not None:
            return
        text = "stopped by SIGTERM"
        with contextlib.suppress(Exception):
            text = message() or text
        raise Terminated(text)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class Held:
    """Within `with`, once `hold()` is called: SIGINT and SIGTERM are noted, not acted on.
    `received` names them; the handlers in place before come back when the `with` ends."""

    def __init__(self, what: str) -> None:
        self.what = what  # for the warning: what is finished before the signal is honoured
        self.received: list[str] = []
        self._previous: dict[int, object] = {}

    def __enter__(self) -> Held:
        return self

    def hold(self) -> None:
        if self._previous or not _main_thread():
            return
        for signum in HELD:
            self._previous[signum] = signal.signal(signum, self._note)

    def _note(self, signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        self.received.append(name)
        log.warning("%s received while %s; finishing that first", name, self.what)

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)  # type: ignore[arg-type]
        self._previous.clear()
