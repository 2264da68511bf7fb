"""Resource requests: parsing, the task option, and the check against a capacity."""

from __future__ import annotations

import pickle

import cloudpickle
import pytest

from taskyard import task
from taskyard.resources import format_amount, local_capacity, parse_memory, parse_resources, shortfall

GIB = 2**30


@task(resources={"gpu": 1, "memory": "4 GiB", "my_label": 2})
def on_gpu(x: int) -> int:
    return x


class TestParseMemory:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("4 GiB", 4 * GIB),
            ("512MB", 512 * 10**6),
            ("2e9", 2 * 10**9),
            ("1.5 gib", 1.5 * GIB),
            ("100 KiB", 100 * 1024),
            ("4G", 4 * 10**9),
            ("1024", 1024),
            ("  7 B ", 7),
        ],
    )
    def test_strings_with_units_parse_to_bytes(self, text: str, expected: float) -> None:
        """Decimal units (KB, MB, GB) are powers of 1000, binary ones (KiB, GiB) of 1024."""
        assert parse_memory(text) == expected

    def test_numbers_are_bytes_rounded_up(self) -> None:
        """A number is bytes; a fraction of a byte rounds up to a whole byte."""
        assert parse_memory(1000) == 1000.0
        assert parse_memory(10.2) == 11.0

    @pytest.mark.parametrize("text", ["4 GX", "lots", "GiB", "", "-1 GiB", "1e400"])
    def test_unparsable_strings_name_the_value_and_the_format(self, text: str) -> None:
        """A string that is not a number with a known unit fails, showing the accepted form."""
        with pytest.raises(ValueError, match=r"memory .*(does not parse|finite)"):
            parse_memory(text)


class TestParseResources:
    def test_normalises_to_floats_and_bytes(self) -> None:
        """Every amount becomes a float, memory becomes bytes, custom names are kept as written."""
        parsed = parse_resources({"cpu": 2, "gpu": 0.5, "memory": "1 KiB", "Fancy-Label": 3})
        assert parsed == {"cpu": 2.0, "gpu": 0.5, "memory": 1024.0, "Fancy-Label": 3.0}
        assert all(type(v) is float for v in parsed.values())

    def test_none_is_an_empty_request(self) -> None:
        """No request is an empty dict."""
        assert parse_resources(None) == {}

    def test_zero_is_kept(self) -> None:
        """A zero amount is a request too (Ray reads num_cpus=0 as 'takes no CPU')."""
        assert parse_resources({"cpu": 0}) == {"cpu": 0.0}

    @pytest.mark.parametrize(
        ("value", "error", "match"),
        [
            ([("gpu", 1)], TypeError, "must be a dict"),
            ({1: 2}, TypeError, "names must be non-empty strings"),
            ({"": 2}, TypeError, "names must be non-empty strings"),
            ({"gpu": -1}, ValueError, r"\['gpu'\] must be a finite number ≥ 0"),
            ({"cpu": float("inf")}, ValueError, r"\['cpu'\] must be a finite number"),
            ({"gpu": "1"}, TypeError, r"\['gpu'\] must be a number"),
            ({"cpu": True}, TypeError, r"\['cpu'\] must be a number"),
            ({"memory": "four gigs"}, ValueError, r"\['memory'\] 'four gigs' does not parse"),
            ({"GPU": 1}, ValueError, "write 'gpu', not 'GPU'"),
            ({"Memory": "1 GiB"}, ValueError, "write 'memory', not 'Memory'"),
        ],
    )
    def test_bad_requests_name_the_culprit(self, value: object, error: type[Exception], match: str) -> None:
        """A bad mapping, name or amount fails with an error naming it and the form to use."""
        with pytest.raises(error, match=match):
            parse_resources(value, "resources")  # type: ignore[arg-type]


class TestTaskOption:
    def test_task_resources_is_the_normalised_request(self) -> None:
        """@task(resources=...) is available parsed as task.resources."""
        assert on_gpu.resources == {"gpu": 1.0, "memory": 4.0 * GIB, "my_label": 2.0}

    def test_no_request_is_an_empty_dict(self) -> None:
        """A task without a request has task.resources == {}."""

        @task
        def plain() -> None: ...

        assert plain.resources == {}

    def test_with_options_replaces_the_request(self) -> None:
        """with_options(resources=...) replaces the whole request; other changes keep it."""
        assert on_gpu.with_options(resources={"cpu": 2}).resources == {"cpu": 2.0}
        assert on_gpu.with_options(retries=1).resources == on_gpu.resources
        assert on_gpu.with_options(resources=None).resources == {}
        assert on_gpu.resources == {"gpu": 1.0, "memory": 4.0 * GIB, "my_label": 2.0}

    @pytest.mark.parametrize(
        ("resources", "match"),
        [({"gpu": -1}, r"task 'f': resources\['gpu'\]"), ({"memory": "4 GX"}, r"task 'f': resources\['memory'\]")],
    )
    def test_bad_request_fails_at_definition_naming_task_and_option(self, resources: object, match: str) -> None:
        """A bad request fails when the task is defined (or re-optioned), naming the task and the option."""
        with pytest.raises(ValueError, match=match):

            @task(resources=resources)
            def f() -> None: ...

        with pytest.raises(ValueError, match=r"resources\['gpu'\]"):
            on_gpu.with_options(resources={"gpu": -2})

    def test_task_with_a_request_pickles_with_its_request(self) -> None:
        """A task with a request survives pickle and cloudpickle (it is shipped to workers)."""

        @task(resources={"gpu": 1, "memory": "1 GiB"})
        def local(x: int) -> int:
            return x

        assert pickle.loads(pickle.dumps(on_gpu)).resources == on_gpu.resources
        copy = cloudpickle.loads(cloudpickle.dumps(local))
        assert copy.resources == {"gpu": 1.0, "memory": float(GIB)}
        assert type(copy.resources) is dict


class TestShortfall:
    def test_a_request_within_capacity_has_none(self) -> None:
        """A request no larger than the capacity of each resource can be met."""
        assert shortfall({"gpu": 1, "cpu": 2}, {"gpu": 1, "cpu": 4}, "the runner") is None

    def test_more_than_the_capacity_names_resource_request_and_capacity(self) -> None:
        """Asking for more than there is names the resource, the request and the capacity."""
        message = shortfall({"gpu": 2}, {"gpu": 1, "cpu": 4}, "the runner")
        assert message is not None
        assert "gpu=2" in message and "the runner has gpu=1" in message and "resources={'gpu': ...}" in message

    def test_an_undeclared_resource_is_none_of_it(self) -> None:
        """A resource the capacity does not list is one there is none of."""
        message = shortfall({"tpu": 1}, {"cpu": 4}, "the runner")
        assert message is not None and "has no 'tpu'" in message

    def test_memory_is_shown_in_units(self) -> None:
        """Memory amounts read as people write them."""
        assert format_amount("memory", 4 * GIB) == "memory=4 GiB"
        message = shortfall({"memory": 8 * GIB}, {"memory": 4 * GIB}, "the runner")
        assert message is not None and "memory=8 GiB" in message and "memory=4 GiB" in message


class TestLocalCapacity:
    def test_cpu_defaults_to_the_worker_count(self) -> None:
        """cpu is the worker count unless declared; gpu and custom resources are absent."""
        capacity = local_capacity(None, 3)
        assert capacity["cpu"] == 3.0 and "gpu" not in capacity
        assert local_capacity({"cpu": 8, "gpu": 1}, 3)["cpu"] == 8.0

    def test_memory_defaults_to_the_machine(self) -> None:
        """memory is this machine's physical memory unless declared."""
        assert local_capacity(None, 1)["memory"] > 0
        assert local_capacity({"memory": "1 GiB"}, 1)["memory"] == float(GIB)

    def test_bad_capacity_names_the_runner_argument(self) -> None:
        """A bad capacity fails naming the runner's resources argument."""
        with pytest.raises(ValueError, match=r"the runner's resources\['gpu'\]"):
            local_capacity({"gpu": -1}, 1)
