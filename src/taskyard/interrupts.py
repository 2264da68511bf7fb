"""Ctrl-C and SIGTERM during a flow run: one cancellation, one short message.

::

    SIGINT  ─ Python raises KeyboardInterrupt in the main thread ─┐
    SIGTERM ─ handled as Ctrl-C (TerminationSignal) ──────────────┤
                                                                  ▼
         the flow run's abort: its work is cancelled, on_cancellation hooks
         run, it ends Cancelled  (shielded: a second SIGINT/SIGTERM only
         hurries it — never an exception in the middle of the clean-up)
                                                                  ▼
    outermost flow run returns control:
        SIGTERM → one line on stderr, then the process ends by SIGTERM (143)
        Ctrl-C  → the KeyboardInterrupt goes on to the caller; if nothing
                  catches it, one line on stderr instead of a traceback (130)

Only a flow run in the main thread (where Python delivers signals) takes
SIGTERM over, and only while it runs: outside flow runs the process's own
handlers apply. Nothing is installed at import.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType, TracebackType
from typing import Any

__all__ = ("TerminationSignal", "flow_run_signals", "shielded", "hurrying", "service_signals")


class TerminationSignal(KeyboardInterrupt):
    """SIGTERM arrived during a flow run; it is cancelled like Ctrl-C, then the process ends."""


_depth = 0  # flow runs in progress in the main thread
_terminating = False
_hurry = threading.Event()


def hurrying() -> bool:
    """True once a second interrupt asked the clean-up to skip its waits."""
    return _hurry.is_set()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    global _terminating
    _terminating = True
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler) and handler is not signal.default_int_handler:
        handler(signal.SIGINT, frame)  # e.g. asyncio.run's: it cancels the main task
    else:
        raise TerminationSignal("SIGTERM")


@contextlib.contextmanager
def flow_run_signals(flow_name: str) -> Iterator[None]:
    """Around a flow run: SIGTERM cancels the outermost one in the main thread like Ctrl-C.

    When the outermost run ends by SIGTERM, one line goes to stderr and the
    process ends by SIGTERM. A KeyboardInterrupt leaving it is marked so
    that, if nothing catches it, one line is printed instead of a traceback.
    """
    global _depth, _terminating
    if threading.current_thread() is not threading.main_thread() or _depth:
        _depth += threading.current_thread() is threading.main_thread()
        try:
            yield
        finally:
            _depth -= threading.current_thread() is threading.main_thread()
        return
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    _depth, _terminating = 1, False
    _hurry.clear()
    try:
        yield
    except KeyboardInterrupt as exc:
        if _terminating:
            _say(f"flow {flow_name!r} was cancelled: the process received SIGTERM")
            _die_by(signal.SIGTERM)
        _quiet_at_top(exc, flow_name)
        raise
    finally:
        _depth -= 1
        signal.signal(signal.SIGTERM, previous)
        if _terminating:  # SIGTERM came, yet the run ended on its own: still end as asked
            _say(f"flow {flow_name!r} ended; the process received SIGTERM")
            _die_by(signal.SIGTERM)


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Clean-up after an interrupt: further SIGINT/SIGTERM only hurry it (see :func:`hurrying`)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def hurry(signum: int, frame: FrameType | None) -> None:
        global _terminating
        _terminating = _terminating or signum == signal.SIGTERM and _depth > 0
        _hurry.set()

    saved = {s: signal.signal(s, hurry) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def service_signals(what: str, stop: Callable[[bool], None]) -> Iterator[None]:
    """Around a long-running service in the main thread (a task worker, a flow server).

    SIGINT and SIGTERM do not raise inside it: the first calls ``stop(False)``
    (finish what it holds, start nothing new), a second ``stop(True)``
    (hurry: hand back or cancel what is left). When the block ends after a
    SIGTERM, one line goes to stderr and the process ends by SIGTERM (143),
    as a flow run does; after a Ctrl-C a KeyboardInterrupt goes on to the
    caller, printed as one line if nothing catches it. Elsewhere than in the
    main thread it does nothing (stop the service by its own ``stop``).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    ended = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        received.append(signum)  # only this: a handler that took a lock the main thread holds would deadlock

    def relay() -> None:  # calls stop() from a thread of its own, where taking locks is safe
        told = 0
        while not ended.wait(0.05):
            if len(received) > told:
                told = len(received)
                stop(told > 1)

    saved = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    relay_thread = threading.Thread(target=relay, name="taskyard-signal-relay", daemon=True)
    relay_thread.start()
    try:
        yield
    finally:
        ended.set()
        relay_thread.join()
        for signum, previous in saved.items():
            signal.signal(signum, previous)
    if signal.SIGTERM in received:
        _say(f"{what} stopped: the process received SIGTERM")
        _die_by(signal.SIGTERM)
    if received:
        exc = KeyboardInterrupt()
        with contextlib.suppress(AttributeError, TypeError):
            setattr(exc, _MESSAGE, f"interrupted: {what} stopped")
            if not getattr(sys.excepthook, "_taskyard", False):
                sys.excepthook = _QuietInterrupts(sys.excepthook)
        raise exc


def _say(text: str) -> None:
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.write(f"taskyard: {text}\n")
        sys.stderr.flush()


def _die_by(signum: int) -> None:
    logging.shutdown()
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    os._exit(128 + signum)  # the signal is blocked here: end the same way


# -- Ctrl-C that nothing caught: one line, not a traceback ------------------------------

_ATTRIBUTE = "__taskyard_flow_run__"
_MESSAGE = "__taskyard_interrupt_message__"


def _quiet_at_top(exc: BaseException, flow_name: str) -> None:
    with contextlib.suppress(AttributeError, TypeError):
        setattr(exc, _ATTRIBUTE, flow_name)
        if not getattr(sys.excepthook, "_taskyard", False):
            sys.excepthook = _QuietInterrupts(sys.excepthook)


class _QuietInterrupts:
    """``sys.excepthook`` wrapper: an interrupt that ended a flow run prints one line."""

    _taskyard = True

    def __init__(self, previous: Any) -> None:
        self.previous = previous

    def __call__(self, kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        name = getattr(exc, _ATTRIBUTE, None)
        if isinstance(exc, KeyboardInterrupt) and name is not None:
            _say(f"interrupted: flow {name!r} was cancelled")
            return
        message = getattr(exc, _MESSAGE, None)
        if isinstance(exc, KeyboardInterrupt) and message is not None:
            _say(message)
            return
        self.previous(kind, exc, tb)
