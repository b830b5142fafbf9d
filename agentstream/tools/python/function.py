"""``@agentstream.tool``: a plain or async Python function as a tool.

The JSON Schema of the arguments comes from the function's type hints (a pydantic model built
from the signature, ``extra="forbid"``), the descriptions from its docstring (Google, NumPy or
reST style, parsed by ``docstring_parser``): the summary and body describe the tool, each
documented parameter its property. ``Annotated[..., pydantic.Field(description=...)]`` wins over
the docstring.

A parameter named ``idempotency_key`` is not an argument the model fills in: the registry passes
the call's idempotency key there (stable across redeliveries of the same call), and the tool's
policy says it ``accepts_idempotency_key``, so a call interrupted by a crash may run again.

Tools are side-effecting unless marked ``read_only=True``, and are cached only when given a
``cache_ttl_s`` (read-only tools only). Sync functions run in a worker thread
(``asyncio.to_thread``), never on the event loop; a sync call that outlives its timeout is
reported as ``TOOL_TIMEOUT`` but its thread runs to the end (Python cannot stop a thread).

The decorated object is still callable as the plain function.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import typing
from collections.abc import Callable
from functools import update_wrapper
from typing import Any, Generic, ParamSpec, TypeVar, overload

import docstring_parser
import pydantic
import pydantic_core
from pydantic.fields import FieldInfo

from agentstream.llm.base import ToolSpec
from agentstream.tools.base import ToolPolicy
from agentstream.tools.exceptions import ToolArgumentsError

P = ParamSpec("P")
R = TypeVar("R")

IDEMPOTENCY_KEY_PARAM = "idempotency_key"
TOOL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
_MAX_PROBLEMS = 3


class PythonTool(Generic[P, R]):
    """A function registered as a tool (see the module docstring); implements ``Tool`` and
    ``KeyedTool``."""

    def __init__(
        self,
        function: Callable[P, R],
        *,
        name: str | None = None,
        description: str | None = None,
        read_only: bool = False,
        idempotent: bool = False,
        cache_ttl_s: int | None = None,
        timeout_s: float | None = None,
    ) -> None:
        self.function = function
        self._function: Callable[..., Any] = function
        self.name = name or function.__name__
        if not TOOL_NAME.match(self.name):
            raise ValueError(
                f"tool name {self.name!r}: use 1-64 letters, digits, '_', '-' or '.', "
                "starting with a letter or '_'"
            )
        if cache_ttl_s is not None and (cache_ttl_s < 0 or not read_only):
            raise ValueError(
                f"tool {self.name!r}: cache_ttl_s needs read_only=True and a value >= 0"
            )
        if timeout_s is not None and timeout_s <= 0:
            raise ValueError(f"tool {self.name!r}: timeout_s must be > 0")
        self.is_async = inspect.iscoroutinefunction(function)
        self.timeout_s = timeout_s
        signature = inspect.signature(function)
        self.takes_key = IDEMPOTENCY_KEY_PARAM in signature.parameters
        docs = docstring_parser.parse(inspect.getdoc(function) or "")
        self.arguments_model = _arguments_model(function, signature, docs, self.name)
        self._spec = ToolSpec(
            name=self.name,
            description=description or _description(docs),
            input_schema=_json_schema(self.arguments_model, self.name),
        )
        self.policy = ToolPolicy(
            read_only=read_only,
            idempotent=read_only or idempotent,
            accepts_idempotency_key=self.takes_key,
            destructive=not read_only,
            cache_ttl_s=cache_ttl_s,
        )
        update_wrapper(self, function)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.function(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<agentstream tool {self.name!r} ({self.function.__module__})>"

    # --- Tool / KeyedTool -----------------------------------------------------------------------

    @property
    def spec(self) -> ToolSpec:
        return self._spec

    @property
    def read_only(self) -> bool:
        return self.policy.read_only

    async def call(self, arguments: dict[str, Any]) -> str:
        return await self.call_with_key(arguments, None)

    async def call_with_key(self, arguments: dict[str, Any], idempotency_key: str | None) -> str:
        kwargs = self._validated(arguments)
        if self.takes_key:
            kwargs[IDEMPOTENCY_KEY_PARAM] = idempotency_key
        if self.is_async:
            result = await self._function(**kwargs)
        else:
            result = await asyncio.to_thread(self._function, **kwargs)
        return _as_text(result)

    def _validated(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """The arguments converted to the hinted types (pydantic); problems name the fields and
        what is wrong, never the values."""
        try:
            model = self.arguments_model.model_validate(arguments)
        except pydantic.ValidationError as exc:
            problems = [
                f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}"
                for e in exc.errors(include_url=False, include_input=False)
            ]
            extra = len(problems) - _MAX_PROBLEMS
            more = f" (+{extra} more)" if extra > 0 else ""
            raise ToolArgumentsError(
                f"invalid arguments for tool {self.name!r}: "
                + "; ".join(problems[:_MAX_PROBLEMS])
                + more
            ) from None
        return {field: getattr(model, field) for field in type(model).model_fields}


@overload
def tool(function: Callable[P, R], /) -> PythonTool[P, R]: ...


@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    read_only: bool = False,
    idempotent: bool = False,
    cache_ttl_s: int | None = None,
    timeout_s: float | None = None,
) -> Callable[[Callable[P, R]], PythonTool[P, R]]: ...


def tool(
    function: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    read_only: bool = False,
    idempotent: bool = False,
    cache_ttl_s: int | None = None,
    timeout_s: float | None = None,
) -> PythonTool[P, R] | Callable[[Callable[P, R]], PythonTool[P, R]]:
    """Make a function a tool: ``@tool`` or ``@tool(read_only=True, cache_ttl_s=60, ...)``.

    ``name`` defaults to the function's name; ``description`` to its docstring. ``read_only``:
    no side effects (may be re-run after a crash). ``idempotent``: repeating a call has no
    further effect. ``cache_ttl_s``: cache results this many seconds (read-only tools only;
    default: never). ``timeout_s``: replaces the worker's ``timeouts.tool_call_s``.
    Operator settings (``tools.overrides``) apply on top of all of these.
    """

    def decorate(fn: Callable[P, R]) -> PythonTool[P, R]:
        return PythonTool(
            fn,
            name=name,
            description=description,
            read_only=read_only,
            idempotent=idempotent,
            cache_ttl_s=cache_ttl_s,
            timeout_s=timeout_s,
        )

    return decorate if function is None else decorate(function)


# --- schema -------------------------------------------------------------------------------------


def _description(docs: docstring_parser.Docstring) -> str:
    parts = [docs.short_description or "", docs.long_description or ""]
    return "\n\n".join(p.strip() for p in parts if p and p.strip())


def _arguments_model(
    function: Callable[..., Any],
    signature: inspect.Signature,
    docs: docstring_parser.Docstring,
    name: str,
) -> type[pydantic.BaseModel]:
    """A pydantic model of the model-facing parameters (all but ``idempotency_key``)."""
    try:
        hints = typing.get_type_hints(function, include_extras=True)
    except (NameError, TypeError) as exc:
        raise ValueError(f"tool {name!r}: cannot resolve its type hints ({exc})") from exc
    described = {p.arg_name: p.description for p in docs.params if p.description}
    fields: dict[str, Any] = {}
    for param in signature.parameters.values():
        if param.name == IDEMPOTENCY_KEY_PARAM:
            continue
        if param.kind not in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
            raise ValueError(
                f"tool {name!r}: parameter {param.name!r} must be passable by keyword "
                "(no *args, **kwargs or positional-only parameters)"
            )
        annotation = hints.get(param.name, Any)
        default = ... if param.default is param.empty else param.default
        extra: dict[str, Any] = {}  # an explicit description=None would erase an Annotated one
        if param.name in described and not _has_description(annotation):
            extra["description"] = described[param.name]
        fields[param.name] = (annotation, pydantic.Field(default, **extra))
    model_name = re.sub(r"\W", "_", name).title().replace("_", "") + "Arguments"
    try:
        return pydantic.create_model(
            model_name,
            __config__=pydantic.ConfigDict(extra="forbid", arbitrary_types_allowed=False),
            **fields,
        )
    except (pydantic.PydanticUserError, pydantic_core.SchemaError, TypeError) as exc:
        raise ValueError(f"tool {name!r}: its parameters have no JSON Schema ({exc})") from exc


def _has_description(annotation: Any) -> bool:
    """Whether ``Annotated[..., Field(description=...)]`` already describes the parameter."""
    metadata = getattr(annotation, "__metadata__", ())
    return any(isinstance(m, FieldInfo) and m.description for m in metadata)


def _json_schema(model: type[pydantic.BaseModel], name: str) -> dict[str, Any]:
    try:
        return model.model_json_schema()
    except pydantic.PydanticUserError as exc:
        raise ValueError(f"tool {name!r}: its parameters have no JSON Schema ({exc})") from exc


def _as_text(result: Any) -> str:
    """What the model sees: a string as is, anything else as JSON (pydantic's encoder)."""
    if isinstance(result, str):
        return result
    try:
        return pydantic_core.to_json(result).decode()
    except pydantic_core.PydanticSerializationError:
        return str(result)
