"""Flow parameters: validated and coerced with pydantic against the type hints."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, get_type_hints

from taskyard.exceptions import ParameterValidationError

__all__ = ("ParameterValidator", "serialize_parameters")


class ParameterValidator:
    """Checks and coerces a flow's bound parameters; built on first use."""

    def __init__(self, fn: Callable[..., Any], flow_name: str) -> None:
        self._fn = fn
        self._flow_name = flow_name
        self._model: Any = None
        self._fields: dict[str, str] = {}  # parameter name -> model field name

    def _build(self) -> Any:
        from pydantic import ConfigDict, Field, create_model

        try:
            hints = get_type_hints(self._fn)
        except Exception:  # unresolvable forward references: validate what resolves
            hints = {}
        fields: dict[str, Any] = {}
        for p in inspect.signature(self._fn).parameters.values():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            annotation = hints.get(p.name, p.annotation)
            annotation = Any if annotation is inspect.Parameter.empty else annotation
            default = ... if p.default is inspect.Parameter.empty else p.default
            # Neutral field names with the parameter as alias: pydantic would
            # treat a parameter named `_x` as a private attribute otherwise.
            field_name = f"p{len(fields)}"
            self._fields[p.name] = field_name
            fields[field_name] = (annotation, Field(default, alias=p.name))
        config = ConfigDict(arbitrary_types_allowed=True)
        return create_model(f"{self._flow_name}_parameters", __config__=config, **fields)

    def __call__(self, params: dict[str, Any]) -> dict[str, Any]:
        """The parameters coerced to their hints.

        Raises:
            ParameterValidationError: A parameter does not fit its hint; the
                message names the parameter, the value and the expected type.
        """
        from pydantic import ValidationError

        if self._model is None:
            self._model = self._build()
        checked = {k: v for k, v in params.items() if k in self._fields}
        try:
            model = self._model.model_validate(checked)
        except ValidationError as exc:
            problems = []
            for error in exc.errors():
                where = ".".join(str(part) for part in error["loc"])
                problems.append(f"parameter {where!r}: {error['msg']} (got {error.get('input')!r})")
            raise ParameterValidationError(f"flow {self._flow_name!r}: " + "; ".join(problems)) from None
        return {**params, **{k: getattr(model, self._fields[k]) for k in checked}}


def serialize_parameters(parameters: dict[str, Any]) -> dict[str, Any]:
    """Parameters as JSON-safe values; one JSON cannot hold becomes ``"<TypeName>"``."""
    from pydantic_core import to_jsonable_python

    out: dict[str, Any] = {}
    for name, value in parameters.items():
        try:
            out[name] = to_jsonable_python(value)
        except Exception:
            out[name] = f"<{type(value).__name__}>"
    return out
