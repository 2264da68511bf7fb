"""Flow.visualize(): the task graph drawn without running tasks, rendered with Graphviz."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from taskyard import flow, task
from taskyard.visualize import FlowGraph, Placeholder, VisualizationError

ran: list[str] = []


@task
def extract(source: str) -> list[int]:
    ran.append("extract")
    return [1, 2, 3]


@task
def clean(x: int) -> int:
    ran.append("clean")
    return x


@task
def total(values: list[int]) -> int:
    ran.append("total")
    return sum(values)


@task(viz_return_value=["a", "b"])
def list_tables() -> list[str]:
    ran.append("list_tables")
    return ["x"]


@task
def load(table: str) -> str:
    return table


@flow
def report(value: int) -> str:
    return f"report {value}"


@flow
def sub_pipeline(tables: list[str]) -> list[str]:
    return [load(t) for t in tables]


@flow
def pipeline(source: str) -> str:
    rows = extract(source)
    cleaned = clean.map(rows)
    summed = total.submit(cleaned)
    tables = list_tables()
    for table in tables:  # a real value from viz_return_value
        load.submit(table, wait_for=[summed])
    sub_pipeline(tables)
    return report(summed)


def _dot_available() -> bool:
    try:
        import graphviz  # noqa: F401
    except ImportError:
        return False
    return shutil.which("dot") is not None


needs_graphviz = pytest.mark.skipif(
    not _dot_available(), reason="needs the graphviz package and dot: pip install -e '.[viz]', apt-get install graphviz"
)


class TestTracing:
    def test_no_task_runs_and_the_graph_has_every_call(self) -> None:
        """Tracing records each call, submit and map as a node, with edges from placeholder arguments."""
        ran.clear()
        from taskyard.visualize import trace_flow

        graph = trace_flow(pipeline, ("db",), {})
        assert ran == []
        source = graph.source
        for label in ("extract", "clean (map)", "total", "list_tables", "load", "subflow sub_pipeline", "report"):
            assert f'"{label}"' in source
        assert "n0 -> n1;" in source  # extract -> clean (map)
        assert "n1 -> n2;" in source  # clean (map) -> total
        assert "n2 -> n4;" in source and "n2 -> n5;" in source  # wait_for=[summed]
        assert "n3 -> n6;" in source  # a viz_return_value passed on whole links list_tables to the subflow
        assert "n6 -> n7;" in source  # the subflow's first steps hang off its node
        assert "n2 -> n9;" in source  # total -> report (subflow)
        assert source.count('label="load"') == 4  # two in the flow, two in the subflow
        assert "subgraph cluster_0" in source

    def test_placeholders_stand_for_results(self) -> None:
        """A task call without viz_return_value gives a Placeholder; result() and await give it back."""
        seen: list[object] = []

        @flow
        def f() -> None:
            value = extract("x")
            seen.append(value)
            seen.append(total.submit(value).result())

        from taskyard.visualize import trace_flow

        trace_flow(f, (), {})
        assert all(isinstance(v, Placeholder) for v in seen)

    def test_code_needing_a_real_value_names_the_fix(self) -> None:
        """A flow that computes on a placeholder fails with a message pointing at viz_return_value."""

        @flow
        def f() -> int:
            return extract("x")[0]  # type: ignore[no-any-return]

        with pytest.raises(VisualizationError, match="viz_return_value") as info:
            f.visualize()
        assert "'extract'" in str(info.value)

    def test_async_flow(self) -> None:
        """An async flow is traced too; awaiting a placeholder gives the placeholder."""

        @task
        async def fetch(n: int) -> int:
            return n

        @flow
        async def f() -> int:
            first = await fetch(1)
            return await fetch(first)

        from taskyard.visualize import trace_flow

        assert trace_flow(f, (), {}).source.count("->") == 1


@needs_graphviz
class TestRendering:
    def test_png_and_svg_files_are_real_images(self, tmp_path: Path) -> None:
        """render() writes a PNG and an SVG of a flow with a map, a chain and a subflow."""
        from taskyard.visualize import trace_flow

        graph = trace_flow(pipeline, ("db",), {})
        png = graph.render(tmp_path / "pipeline.png")
        svg = graph.render(tmp_path / "pipeline.svg")
        data = png.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000
        text = svg.read_text()
        assert text.lstrip().startswith("<?xml") and "<svg" in text and "sub_pipeline" in text

    def test_visualize_writes_flow_name_png(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Outside a notebook visualize() writes <flow name>.png in the current directory and returns the graph."""
        monkeypatch.chdir(tmp_path)
        graph = pipeline.visualize("db")
        assert isinstance(graph, FlowGraph)
        assert (tmp_path / "pipeline.png").read_bytes().startswith(b"\x89PNG")

    def test_notebook_display_is_svg(self) -> None:
        """In Jupyter the graph shows inline through _repr_svg_."""
        from taskyard.visualize import trace_flow

        assert "<svg" in trace_flow(pipeline, ("db",), {})._repr_svg_()


class TestMissingGraphviz:
    def test_missing_package_says_what_to_install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without the graphviz package the error names the viz extra (installed from the repository) and the dot program."""
        monkeypatch.setitem(sys.modules, "graphviz", None)
        from taskyard.visualize import trace_flow

        with pytest.raises(VisualizationError, match=r"pip install -e '\.\[viz\]'.*apt-get install graphviz"):
            trace_flow(pipeline, ("db",), {}).pipe("png")

    def test_missing_dot_says_what_to_install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without dot on PATH the error says to install Graphviz's dot program."""
        pytest.importorskip("graphviz", reason="the graphviz package is in the viz extra")
        monkeypatch.setenv("PATH", "")
        from taskyard.visualize import trace_flow

        with pytest.raises(VisualizationError, match="dot program was not found"):
            trace_flow(pipeline, ("db",), {}).pipe("png")
