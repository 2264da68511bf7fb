"""The embedded run store: one SQLite database under ``TASKYARD_HOME``.

::

    flow process                                   TASKYARD_HOME/runs.db (WAL)
    ───────────                                    ─────────────────────────
    Flow run starts ── Recorder.start_run ──┐
    submit/map ─────── Recorder.track ──────┤ queued in memory
    task call run inline ─ track_done ──────┤
                                            ▼
                        writer thread (every 0.5 s, or on flush):
                          finished task runs → one chunk row per run per pass
                          flow states, heartbeats → the same transaction
                          polls cancel requests of its active runs
    flow run ends ──── Recorder.finish ──── synchronous flush (nothing lost)

The flow engine (flows.py, dispatch.py) talks to :mod:`taskyard.store.recorder`
only; reading, controlling and starting runs is :mod:`taskyard.runs`, the
public API built on top. This package sits below the flow engine so the
imports point down the layers.
"""

from taskyard.store.db import connect, database_path
from taskyard.store.recorder import Recorder, recorder_for

__all__ = ("connect", "database_path", "Recorder", "recorder_for")
