"""``Flow.visualize()``: the task graph of a flow, drawn without running its tasks.

::

    Flow.visualize(*args) ── the flow function runs with a tracer in the context
        task call / submit / map ─▶ tracer: a node (edges from the placeholders
                                    found in its arguments and wait_for)
                                    ◀─ a placeholder, or the task's viz_return_value
        subflow call             ─▶ its function runs in a cluster of its own
    FlowGraph ── .source (Graphviz dot text, always)
              ── .render("flow.png" | "flow.svg") and inline display in a
                 notebook (needs the ``graphviz`` package and the ``dot`` program)

No task function runs and no runner starts. Flow code that needs a real value
from a task (to branch, to loop over it) gets one from the task's
``viz_return_value`` option.
"""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taskyard.exceptions import TaskyardError

__all__ = ("FlowGraph", "Placeholder", "VisualizationError", "current_tracer", "trace_flow")

_tracer: ContextVar[_Tracer | None] = ContextVar("taskyard_viz_tracer", default=None)
_MISSING: Any = object()
_INSTALL = "pip install -e '.[viz]' in the taskyard repository (the graphviz package) and Graphviz's dot program (apt-get install graphviz, brew install graphviz)"


class VisualizationError(TaskyardError, RuntimeError):
    """A flow could not be traced or its graph could not be drawn."""


class Placeholder:
    """What a task call returns while a flow is being visualized: stands for the run's result."""

    __slots__ = ("node",)

    def __init__(self, node: int) -> None:
        self.node = node

    def __repr__(self) -> str:
        return f"<Placeholder of node {self.node}>"

    def result(self, timeout: float | None = None, raise_on_failure: bool = True) -> Placeholder:
        return self

    def wait(self, timeout: float | None = None) -> None:
        return None

    def done(self) -> bool:
        return True

    def __await__(self) -> Any:
        yield from ()
        return self


class PlaceholderList(list[Any]):
    """A mapped call's placeholders; ``result()`` and ``wait()`` like a FutureList."""

    def result(self, timeout: float | None = None, raise_on_failure: bool = True) -> list[Any]:
        return list(self)

    def wait(self, timeout: float | None = None) -> None:
        return None


@dataclass
class _Node:
    id: int
    label: str
    kind: str  # "task", "map", "flow"
    cluster: int | None


@dataclass
class _Graph:
    nodes: list[_Node] = field(default_factory=list)
    edges: list[tuple[int, int]] = field(default_factory=list)
    clusters: dict[int, tuple[str, int | None]] = field(default_factory=dict)  # id -> (label, parent)


class _Tracer:
    def __init__(self) -> None:
        self.graph = _Graph()
        self.cluster: int | None = None
        self.entries: dict[int, int] = {}  # cluster -> its subflow's node
        # viz_return_value objects handed out, by id (the object is kept so
        # the id stays its own): passing one on draws an edge, as in Prefect.
        self.values: dict[int, tuple[int, Any]] = {}

    def node(self, label: str, kind: str, upstream: Any) -> int:
        node = _Node(len(self.graph.nodes), label, kind, self.cluster)
        self.graph.nodes.append(node)
        sources = dict.fromkeys(_placeholders(upstream, self.values))
        if not sources and self.cluster is not None and kind != "flow":
            sources = {self.entries[self.cluster]: None}  # a subflow's first steps hang off it
        for source in sources:
            self.graph.edges.append((source, node.id))
        return node.id

    def stand_in(self, node: int, value: Any) -> Any:
        if value is None:
            return Placeholder(node)
        self.values[id(value)] = (node, value)
        return value

    def call(self, task: Any, args: tuple[Any, ...], kwargs: dict[str, Any], how: str) -> Any:
        """A task call, submit or map in the traced flow: a node, and what the flow gets back."""
        label = task.name if how != "map" else f"{task.name} (map)"
        node = self.node(label, "map" if how == "map" else "task", (args, kwargs))
        value = task.viz_return_value
        if how == "map":
            data = {k: v for k, v in kwargs.items() if k not in ("wait_for", "return_state")}
            return PlaceholderList([self.stand_in(node, value)] * _map_length(args, data))
        return self.stand_in(node, value)

    def subflow(self, flow: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """A subflow call: its body is traced inside a cluster; the flow gets what its body returned."""
        cluster_id = len(self.graph.clusters)
        self.graph.clusters[cluster_id] = (flow.name, self.cluster)
        outer = self.cluster
        self.cluster = cluster_id
        try:
            self.cluster = outer  # the subflow's own node takes its edges from the caller's side
            entry = self.node(flow.name, "flow", (args, kwargs))
            self.graph.nodes[entry].cluster = cluster_id
            self.entries[cluster_id] = entry
            self.cluster = cluster_id
            result = _call(flow.fn, args, kwargs)
        finally:
            self.cluster = outer
        return result if _placeholders(result, self.values) else Placeholder(entry)


def current_tracer() -> _Tracer | None:
    """The tracer of the flow being visualized in this context, if any."""
    return _tracer.get()


@contextlib.contextmanager
def _tracing(tracer: _Tracer) -> Iterator[None]:
    token = _tracer.set(tracer)
    try:
        yield
    finally:
        _tracer.reset(token)


def trace_flow(flow: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> FlowGraph:
    """Run ``flow``'s function with every task call recorded instead of run.

    Raises:
        VisualizationError: The flow body failed on a placeholder (it needs
            a real value: set ``viz_return_value`` on the task named).
    """
    tracer = _Tracer()
    with _tracing(tracer):
        try:
            _call(flow.fn, args, kwargs)
        except Exception as exc:
            last = tracer.graph.nodes[-1].label if tracer.graph.nodes else None
            hint = f" (the last task call traced was {last!r})" if last else ""
            raise VisualizationError(
                f"flow {flow.name!r} could not be traced{hint}: {type(exc).__name__}: {exc}. A task call returns a "
                "placeholder while visualizing; where the flow needs a real value, give the task "
                "viz_return_value=... (e.g. @task(viz_return_value=[1, 2, 3]))"
            ) from exc
    return FlowGraph(flow.name, tracer.graph)


def _call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    result = fn(*args, **kwargs)
    if inspect.iscoroutine(result):
        import asyncio

        result = asyncio.run(result)
    return result


def _placeholders(obj: Any, values: dict[int, tuple[int, Any]], depth: int = 0) -> list[int]:
    """The nodes whose results ``obj`` holds: placeholders, and stand-in values passed on whole."""
    if isinstance(obj, Placeholder):
        return [obj.node]
    known = values.get(id(obj))
    if known is not None and known[1] is obj:
        return [known[0]]
    if depth > 4:
        return []
    if isinstance(obj, dict):
        return [n for v in obj.values() for n in _placeholders(v, values, depth + 1)]
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [n for v in obj for n in _placeholders(v, values, depth + 1)]
    inner = getattr(obj, "value", _MISSING)  # unmapped / allow_failure / quote wrappers
    if inner is not _MISSING and type(obj).__module__ == "taskyard.annotations":
        return _placeholders(inner, values, depth + 1)
    return []


def _map_length(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    for value in (*args, *kwargs.values()):
        if isinstance(value, (list, tuple, range)):
            return len(value)
    return 1


class FlowGraph:
    """The task graph of a flow: Graphviz source, rendered to a file or shown in a notebook."""

    def __init__(self, name: str, graph: _Graph) -> None:
        self.name = name
        self._graph = graph

    def __repr__(self) -> str:
        return f"<FlowGraph {self.name}: {len(self._graph.nodes)} nodes, {len(self._graph.edges)} edges>"

    @property
    def source(self) -> str:
        """The graph in Graphviz's dot language."""
        g = self._graph
        lines = [f"digraph {_quote(self.name)} {{", "  rankdir=LR;", '  node [fontname="Helvetica", style="rounded,filled", fillcolor="#e8f0fe"];']
        lines += _cluster_lines(g, None, "  ")
        lines += [f"  n{a} -> n{b};" for a, b in g.edges]
        lines.append("}")
        return "\n".join(lines) + "\n"

    def pipe(self, format: str = "png") -> bytes:
        """The rendered image as bytes (``"png"`` or ``"svg"``).

        Raises:
            VisualizationError: graphviz or its ``dot`` program is missing.
        """
        try:
            import graphviz
        except ImportError:
            raise VisualizationError(f"drawing a flow needs Graphviz: {_INSTALL}") from None
        try:
            data: bytes = graphviz.Source(self.source).pipe(format=format)
        except graphviz.ExecutableNotFound:
            raise VisualizationError(f"Graphviz's dot program was not found on PATH: {_INSTALL}") from None
        return data

    def render(self, path: str | os.PathLike[str], format: str | None = None) -> Path:
        """Write the image to ``path``; the format comes from its suffix (``.png``, ``.svg``) unless given."""
        target = Path(path)
        kind = format or target.suffix.lstrip(".").lower() or "png"
        target.write_bytes(self.pipe(kind))
        return target

    def _repr_svg_(self) -> str:
        """Inline display in Jupyter."""
        return self.pipe("svg").decode()


def _cluster_lines(g: _Graph, cluster: int | None, indent: str) -> list[str]:
    lines = []
    for node in g.nodes:
        if node.cluster == cluster:
            shape = {"task": "box", "map": "box3d", "flow": "folder"}[node.kind]
            lines.append(f"{indent}n{node.id} [label={_quote(node.label)}, shape={shape}];")
    for cid, (label, parent) in g.clusters.items():
        if parent == cluster:
            lines.append(f"{indent}subgraph cluster_{cid} {{")
            lines.append(f'{indent}  label={_quote("subflow " + label)}; style="rounded,dashed";')
            lines += _cluster_lines(g, cid, indent + "  ")
            lines.append(f"{indent}}}")
    return lines


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def in_notebook() -> bool:
    """True inside an IPython kernel (Jupyter), where a FlowGraph displays itself."""
    import sys

    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"
