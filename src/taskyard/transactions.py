"""Transactions: undo the side effects of the task runs in a block when a later one fails.

::

    with transaction() as txn:        the block's runs: every task run started
        a = write.submit(...)         inside it (called, submitted, mapped; on
        b = check(a)                  any runner), noted when it ends, in order
        ...
    block ends ── waits for the runs it started ──┬─ all completed, no exception:
                                                  │    on_commit hooks (in order);
                                                  │    staged cache records published
                                                  └─ an exception, a run that did not
                                                       complete, or txn.rollback():
                                                       on_rollback hooks of the runs that
                                                       completed, newest first

Hooks run in the process that holds the block (the flow's), whatever runner
ran the task, so a run on a worker process or a cluster is undone like a
local one. A nested block hands its completed runs to the enclosing one on
success (their commit hooks wait for the outermost block) and rolls back its
own runs on failure.

Cache records written by runs inside a block are staged under
``transactions/<id>/`` in their result storage and moved to their real key on
commit, so no other run sees a cached value from work that was rolled back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

from taskyard.context import TaskRunInfo, flow_run_var, task_run_var
from taskyard.futures import TaskFuture
from taskyard.futures import wait as wait_futures
from taskyard.persistence import staged_key
from taskyard.states import State

__all__ = ("Transaction", "TransactionState", "transaction", "get_transaction", "open_transaction")

logger = logging.getLogger("taskyard.transactions")
_current: ContextVar[Transaction | None] = ContextVar("taskyard_transaction", default=None)
_MISSING: Any = object()


class TransactionState:
    """Where a transaction is: the values of ``Transaction.state``."""

    ACTIVE = "ACTIVE"
    COMMITTED = "COMMITTED"
    ROLLED_BACK = "ROLLED_BACK"


class Transaction:
    """A block's transaction, or the view of one task run of it given to that run's hooks.

    Attributes:
        key: The key given to ``transaction(key=...)``, if any.
        state: ``"ACTIVE"``, ``"COMMITTED"`` or ``"ROLLED_BACK"``.
        task_run: In a hook: the run the hook belongs to (else None).
        run_state: In a hook: that run's final State (else None).
        parent: The enclosing transaction (for a hook: the block's).
    """

    def __init__(
        self,
        key: str | None = None,
        parent: Transaction | None = None,
        task_run: TaskRunInfo | None = None,
        run_state: State[Any] | None = None,
    ) -> None:
        self.key = key
        self.parent = parent
        self.task_run = task_run
        self.run_state = run_state
        self.id = os.urandom(8).hex()
        self.state = TransactionState.ACTIVE
        self._values: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._futures: list[TaskFuture[Any]] = []
        self._runs: list[tuple[Any, TaskRunInfo, State[Any]]] = []  # (task, run, final state), in order

    def __repr__(self) -> str:
        return f"<Transaction {self.key or self.id} {self.state}>"

    def get(self, name: str, default: Any = _MISSING) -> Any:
        """A value set with :meth:`set` here or in an enclosing transaction.

        Raises:
            KeyError: No such value and no default.
        """
        txn: Transaction | None = self
        while txn is not None:
            if name in txn._values:
                return txn._values[name]
            txn = txn.parent
        if default is _MISSING:
            raise KeyError(f"transaction {self.key or self.id} has no value {name!r}; set it with txn.set({name!r}, ...)")
        return default

    def set(self, name: str, value: Any) -> None:
        """Keep a value for the hooks (set in the flow; a task on another process cannot reach it)."""
        self._values[name] = value

    def read(self) -> Any:
        """In a hook: the result of the run the hook belongs to."""
        if self.run_state is None:
            raise ValueError("read() is for the transaction a hook receives; the block itself has no result")
        return self.run_state.result()

    def is_active(self) -> bool:
        return self.state == TransactionState.ACTIVE

    def is_committed(self) -> bool:
        return self.state == TransactionState.COMMITTED

    def is_rolled_back(self) -> bool:
        return self.state == TransactionState.ROLLED_BACK

    def rollback(self) -> bool:
        """Roll back now: wait for the block's runs, then run their rollback hooks, newest first.

        Returns:
            False if the transaction had already ended, else True.
        """
        if not self.is_active():
            return False
        self._settle()
        self.state = TransactionState.ROLLED_BACK
        for task, run, state in reversed(self._runs):
            _call_hooks(task.on_rollback_hooks, self._view(run, state), "on_rollback")
        return True

    def commit(self) -> bool:
        """Commit: publish staged cache records, then run the commit hooks in order.

        A nested transaction hands its runs to the enclosing one instead.

        Returns:
            False if the transaction had already ended, else True.
        """
        if not self.is_active():
            return False
        self._settle()
        self.state = TransactionState.COMMITTED
        if self.parent is not None and self.parent.is_active():
            with self.parent._lock:
                self.parent._runs.extend(self._runs)
            return True
        for task, run, state in self._runs:
            if run.transaction is not None:  # staged under the block it started in
                _publish(run.transaction, task, state)
        for task, run, state in self._runs:
            _call_hooks(task.on_commit_hooks, self._view(run, state), "on_commit")
        return True

    # -- what the dispatcher and the engine's entry points tell it -------------------

    def note_run(self, task: Any, run: TaskRunInfo, state: State[Any]) -> None:
        """A run started inside the block ended in ``state``."""
        with self._lock:
            self._runs.append((task, run, state))

    def note_future(self, task: Any, run: TaskRunInfo, future: TaskFuture[Any]) -> None:
        """A run started inside the block will end in ``future``'s state."""
        with self._lock:
            self._futures.append(future)
        future.add_done_callback(lambda done: self.note_run(task, run, done.state))

    def _settle(self) -> None:
        while True:
            with self._lock:
                pending = [f for f in self._futures if not f.done()]
            if not pending:
                return
            wait_futures(pending)

    def _failed(self) -> bool:
        with self._lock:
            return any(not state.is_completed() for _, _, state in self._runs)

    def _view(self, run: TaskRunInfo, state: State[Any]) -> Transaction:
        view = Transaction(self.key, parent=self, task_run=run, run_state=state)
        view.state = self.state
        return view


@contextlib.contextmanager
def transaction(key: str | None = None) -> Iterator[Transaction]:
    """Open a transaction over the task runs started in the block.

    When the block ends, it waits for those runs. If the block raised, or
    one of them did not complete, the rollback hooks (``on_rollback``) of the
    runs that completed are called, newest first; otherwise the commit hooks
    (``on_commit``) are called in order and the cache records the runs wrote
    become visible. Hooks are called as ``hook(txn)``, where ``txn.task_run``
    is the run and ``txn.read()`` its result.

    Args:
        key: A name for the transaction, shown in logs and ``repr``.
    """
    txn = Transaction(key, parent=_current.get())
    token = _current.set(txn)
    try:
        yield txn
    except BaseException:
        _current.reset(token)
        txn.rollback()
        raise
    _current.reset(token)
    if txn.is_active():
        txn._settle()
        if txn._failed():
            logger.warning("transaction %s: a task run did not complete; rolling back", key or txn.id)
            txn.rollback()
        else:
            txn.commit()


def get_transaction() -> Transaction | None:
    """The innermost open transaction block of the calling code, or None.

    Inside a task run it is None on every runner (a run on another process
    could not reach the block): give hooks what they need through the
    run's result, which they read with ``txn.read()``.
    """
    return open_transaction()


def open_transaction() -> Transaction | None:
    """The transaction a task run started here joins: the innermost open block, outside task runs.

    A run started inside another task run is part of that run, not of the
    block, on every runner.
    """
    txn = _current.get()
    if txn is None or task_run_var.get() is not None:
        return None
    return txn


def _call_hooks(hooks: tuple[Callable[..., object], ...], view: Transaction, kind: str) -> None:
    import inspect

    for hook in hooks:
        try:
            returned = hook(view)
            if inspect.isawaitable(returned):  # an async def hook
                from taskyard.execution import run_coroutine_sync

                run_coroutine_sync(_awaited(returned))
        except Exception:
            name = view.task_run.name if view.task_run is not None else "?"
            logger.exception("%s hook %r of %r raised; going on with the others", kind, hook, name)


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def _publish(transaction_id: str, task: Any, state: State[Any]) -> None:
    """Move a run's staged cache record to its real key (best effort, logged)."""
    location = state.result_location
    if location is None:
        return
    from taskyard.results import get_storage
    from taskyard.settings import current_settings

    flow_run = flow_run_var.get()
    spec = task.result_storage if task.result_storage is not None else getattr(flow_run, "result_storage", None)
    storage = get_storage(spec, getattr(flow_run, "home", None) or current_settings().home)
    prefix = storage.location(staged_key(transaction_id, "@"))[:-1]
    if not location.startswith(prefix):
        return
    final_key = location[len(prefix) :].replace(os.sep, "/")
    try:
        data = storage.read(staged_key(transaction_id, final_key))
        if data is not None:
            storage.write(final_key, data)
            remove = getattr(storage, "delete", None)
            if remove is not None:
                remove(staged_key(transaction_id, final_key))
    except Exception:
        logger.exception("transaction %s: the cache record at %s could not be published", transaction_id, location)
