"""Strict pydantic validators built from the openai SDK's request TypedDicts, and their errors.

The SDK's param TypedDicts say what the API accepts: every field, every literal value, which
keys are required; a newer SDK that adds a field or a value is picked up without a chatledger
release. As they stand they are no validators, though: pydantic reads their ``Iterable`` arrays
lazily (errors surface only when iterated), ignores unknown keys and coerces ``"1"`` to ``1``.
:class:`SdkSchema` rebuilds them as closed, strict TypedDicts with discriminated unions (so an
error names one branch, not all of them) and with the caller's own rules on chosen fields.
:func:`explain` turns pydantic's errors into field paths and rules in chatledger's words.
"""

from __future__ import annotations

import collections.abc
import reprlib
import types
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import (
    Annotated,
    Any,
    Literal,
    NotRequired,
    Required,
    Union,
    cast,
    get_args,
    get_origin,
    get_type_hints,
)

from annotated_types import Len
from pydantic import (
    AfterValidator,
    ConfigDict,
    Discriminator,
    Tag,
    TypeAdapter,
    ValidationError,
)
from pydantic_core import ErrorDetails, PydanticCustomError
from typing_extensions import TypedDict, is_typeddict

__all__ = [
    "Issue",
    "SdkSchema",
    "Text",
    "canonical",
    "check_text",
    "describe",
    "explain",
    "path",
    "text_problem",
    "validate",
]

# --- Values in messages -------------------------------------------------------------------

_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 60
_repr.maxlevel = 3


def describe(value: object) -> str:
    """A short repr for an error message; never fails (huge ints, deep nesting, odd objects)."""
    if isinstance(value, bool):
        return "a bool"
    try:
        return _repr.repr(value)
    except (ValueError, RecursionError):
        return f"<{type(value).__name__} too large to show>"


def text_problem(value: str) -> str | None:
    """Why a string is not text every database can store (NUL, lone surrogate), or None."""
    if "\x00" in value:
        return "must not contain NUL characters (\\u0000)"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "must be valid Unicode (it contains a lone surrogate)"
    return None


def check_text(value: str) -> str:
    """``value`` if :func:`text_problem` finds nothing, else a pydantic error saying why."""
    why = text_problem(value)
    if why is not None:
        raise PydanticCustomError("text", why)
    return value


#: A string that can be stored: strict (no bytes), no NUL, no lone surrogate.
Text = Annotated[str, AfterValidator(check_text)]


def canonical(value: Any, drop_none: bool = True) -> tuple[Any, bool]:
    """``value`` as plain JSON shapes: dicts without None values, lists for tuples.

    Returns the copy and whether it differs. Validation runs on the input as given (the common
    case needs no copy); only when it fails is this tried, so that a tuple, a mapping proxy or
    a ``None`` the API treats as absent is not an error.
    """
    if isinstance(value, Mapping):
        out: dict[Any, Any] = {}
        changed = type(value) is not dict
        for key, item in value.items():
            if item is None and drop_none:
                changed = True
                continue
            out[key], sub = canonical(item, drop_none)
            changed = changed or sub
        return out, changed
    if isinstance(value, (list, tuple)):
        items = [canonical(item, drop_none) for item in value]
        return [i for i, _ in items], type(value) is not list or any(c for _, c in items)
    return value, False


def validate(
    adapter: TypeAdapter[Any], value: Any, drop_none: bool = True
) -> tuple[Any, list[ErrorDetails]]:
    """Validate ``value``: its validated copy and no errors, or None and pydantic's errors.

    A failure is retried on :func:`canonical` ``(value)`` when that differs. Whatever else the
    validator raises (an int too large to show as a union tag) becomes an error too.
    """
    try:
        return adapter.validator.validate_python(value), []
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
    except (ValueError, RecursionError) as exc:
        why = "is nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        return None, [{"type": "value_error", "loc": (), "msg": why, "input": value}]
    try:
        fixed, changed = canonical(value, drop_none)
        if changed:
            return adapter.validator.validate_python(fixed), []
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
    except (ValueError, RecursionError):
        pass
    return None, errors


# --- Building validators from the SDK's TypedDicts ------------------------------------------


def _shape(value: object) -> str | None:
    """Which branch of a str / list / dict union a value belongs to (None: no branch)."""
    if isinstance(value, str):
        return "str"
    if isinstance(value, Mapping):
        return "dict"
    if isinstance(value, (list, tuple)):
        return "list"
    return None


def _type_tag(value: object) -> str | None:
    """Which branch of a union of objects a value belongs to: its ``type``, if a string.

    (pydantic's own discriminator accepts any object with attributes, and shows a non-string
    type in its error by converting it, which fails for ints over 4300 digits.)
    """
    tag = value.get("type") if isinstance(value, Mapping) else None
    return tag if isinstance(tag, str) else None


_SHAPES = {"str": "a string", "list": "a list", "dict": "a dict"}
_ARRAYS = (collections.abc.Iterable, collections.abc.Sequence)
# Field order of the rebuilt TypedDicts (pydantic emits fields in schema order): the keys that
# say what an object is come first, as people write them, then the SDK's order.
_FIRST = ("role", "type", "id", "name")


def _apply(origin: Any, *args: Any) -> Any:
    """``origin[args]`` for types computed at run time."""
    return cast(Any, origin)[args if len(args) > 1 else args[0]]


def _kind_of(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Annotated:
        return _kind_of(get_args(tp)[0])
    if tp is str or (origin is Literal and all(isinstance(a, str) for a in get_args(tp))):
        return "str"
    if is_typeddict(tp) or tp is dict or origin is dict:
        return "dict"
    if origin in (*_ARRAYS, list):
        return "list"
    return "other"


class SdkSchema:
    """Rebuilds SDK TypedDicts as strict pydantic validators.

    ``fields`` replaces the type of ``(TypedDict, field)`` (given in the SDK's vocabulary, so
    nested TypedDicts are rebuilt too; ``Annotated`` metadata is kept); ``added`` gives a
    TypedDict fields the SDK lacks. ``text`` is the type that ``str`` becomes.
    """

    def __init__(
        self,
        fields: Mapping[tuple[Any, str], Any],
        added: Mapping[Any, Mapping[str, Any]] | None = None,
        text: Any = Text,
    ) -> None:
        self._fields = fields
        self._added = added or {}
        self._text = text
        self._built: dict[Any, Any] = {}

    def adapter(self, tp: Any, *, only: Collection[str] | None = None) -> TypeAdapter[Any]:
        """A validator for ``tp``; ``only`` keeps just those fields of a root TypedDict."""
        return TypeAdapter(self._typed_dict(tp, only) if only is not None else self.build(tp))

    def build(self, tp: Any) -> Any:
        origin, args = get_origin(tp), get_args(tp)
        if origin is Annotated:
            inner = args[0] if args[0] in (str, int, float, bool) else self.build(args[0])
            return _apply(Annotated, inner, *tp.__metadata__)
        if is_typeddict(tp):
            return self._typed_dict(tp)
        if origin in (Union, types.UnionType):
            return self._union(args)
        if origin in _ARRAYS:
            return Annotated[_apply(list, self.build(args[0])), Len(1)]
        if origin is list:
            return _apply(list, self.build(args[0]))
        if origin is dict:
            return _apply(dict, self.build(args[0]), self.build(args[1]))
        if tp is str:
            return self._text
        if tp is object:
            return Any
        return tp  # Literal, bool, int, float

    def _typed_dict(self, td: Any, only: Collection[str] | None = None) -> Any:
        if only is None and td in self._built:
            return self._built[td]
        hints = {**get_type_hints(td, include_extras=True), **self._added.get(td, {})}
        order = sorted(hints, key=lambda k: _FIRST.index(k) if k in _FIRST else len(_FIRST))
        fields: dict[str, Any] = {}
        for name in order:
            if only is not None and name not in only:
                continue
            hint = hints[name]
            wrap = get_origin(hint) if get_origin(hint) in (Required, NotRequired) else None
            inner = get_args(hint)[0] if wrap else hint
            tp = self.build(self._fields.get((td, name), inner))
            fields[name] = _apply(wrap, tp) if wrap else tp
        out = cast(Any, TypedDict)(td.__name__, fields, total=False)
        closed = only is None  # a root with ``only`` leaves the other fields to its caller
        out.__pydantic_config__ = ConfigDict(extra="forbid" if closed else "ignore", strict=True)
        if only is None:
            self._built[td] = out
        return out

    def _union(self, args: tuple[Any, ...]) -> Any:
        members = [a for a in args if a is not type(None)]
        kinds: dict[str, list[Any]] = {}
        for m in members:
            kinds.setdefault(_kind_of(m), []).append(m)
        choices: dict[str, Any] = {}
        for kind, group in kinds.items():
            if kind == "str" and any(m is str for m in group):
                group = [str]  # a literal among plain strings adds nothing
            elif kind == "str" and len(group) > 1:
                group = [Literal[tuple(v for m in group for v in get_args(m))]]
            built = [self.build(m) for m in group]
            if len(built) == 1:
                choices[kind] = built[0]
            elif kind == "dict" and all("type" in get_type_hints(m) for m in group):
                # simplest objects first: error messages list the choices in this order
                order = sorted(range(len(group)), key=lambda i: len(get_type_hints(group[i])))
                tags = [get_args(get_type_hints(group[i])["type"])[0] for i in order]
                tagged = [Annotated[built[i], Tag(t)] for i, t in zip(order, tags, strict=True)]
                choices[kind] = Annotated[_apply(Union, *tagged), Discriminator(_type_tag)]
            else:
                choices[kind] = _apply(Union, *built)
        if len(choices) == 1:
            (out,) = choices.values()
        elif "other" in choices:
            out = _apply(Union, *choices.values())
        else:
            tagged = [Annotated[t, Tag(k)] for k, t in choices.items()]
            out = Annotated[_apply(Union, *tagged), Discriminator(_shape)]
        return _apply(Union, out, None) if len(members) < len(args) else out


# --- Errors in chatledger's words -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Issue:
    """One pydantic error, located and worded."""

    #: field names, indexes and ``[key]`` from the validated value's root, union tags removed;
    #: for a key error the last item is the key itself
    loc: tuple[Any, ...]
    #: pydantic's error type (``missing``, ``string_type``, ...) or a custom validator's
    kind: str
    rule: str
    #: the offending value
    value: Any
    #: the error concerns a dict key (``loc`` ends with that key), not its value
    key: bool = False


def path(loc: tuple[Any, ...]) -> str:
    """``("content", 0, "text")`` as ``content[0].text``."""
    out = ""
    for part in loc:
        if isinstance(part, int) or (isinstance(part, str) and part.startswith("[")):
            out += f"[{part}]" if isinstance(part, int) else part
        else:
            out += f".{part}" if out else str(part)
    return out


def _unwrap(node: Any, defs: dict[str, Any]) -> Any:
    """Step through schema nodes that wrap another without adding to an error's loc."""
    while node is not None:
        if "ref" in node:
            defs[node["ref"]] = node
        kind = node["type"]
        if kind == "definitions":
            defs.update((d["ref"], d) for d in node["definitions"])
        elif kind == "definition-ref":
            node = defs.get(node["schema_ref"])
            continue
        elif kind not in ("nullable", "function-after", "function-before", "function-wrap"):
            return node
        node = node["schema"]
    return None


def _options(tags: list[str]) -> str:
    if len(tags) == 2:
        return " or ".join(map(repr, tags))
    return "one of " + ", ".join(tags) if len(tags) > 1 else repr(tags[0])


def explain(
    adapter: TypeAdapter[Any],
    errors: list[ErrorDetails],
    *,
    patterns: Mapping[str, str],
    nouns: Mapping[str, str] | None = None,
) -> list[Issue]:
    """Locate and word pydantic's errors by walking the validator's schema along each loc.

    The walk removes union branch tags from the path, finds the fields an unknown key could
    have been and the tags a discriminated union expects. ``patterns`` words each regex
    constraint; ``nouns`` names the items of a list field (``tools`` -> ``tool``).
    """
    issues = [_explain(adapter.core_schema, e, patterns, nouns or {}) for e in errors]
    # an object whose "type" is wrong is the wrong kind of object: its other errors are noise
    wrong = {i.loc[:-1] for i in issues if i.kind == "literal_error" and i.loc[-1:] == ("type",)}
    wrong.discard(())
    return [i for i in issues if i.loc[-1:] == ("type",) or not _under(i.loc, wrong)]


def _under(loc: tuple[Any, ...], prefixes: set[tuple[Any, ...]]) -> bool:
    return any(loc[: len(p)] == p for p in prefixes)


def _explain(
    root: Any, err: ErrorDetails, patterns: Mapping[str, str], nouns: Mapping[str, str]
) -> Issue:
    loc, node, parent, key = _locate(root, list(err["loc"]))
    value, kind = err["input"], err["type"]
    got = type(value).__name__
    name = next((p for p in reversed(loc) if isinstance(p, str)), "")
    rule: str
    if kind == "missing":
        rule = "is required"
    elif kind == "extra_forbidden":
        allowed = ", ".join(sorted(parent["fields"])) if parent else ""
        rule = f"is not a known field (allowed: {allowed})"
    elif kind in ("union_tag_invalid", "union_tag_not_found") and node is not None:
        tags = list(node["choices"])
        if node["discriminator"] is _shape:
            shapes = [_SHAPES.get(t, t) for t in tags]
            if name in nouns and "list" in tags:
                shapes[tags.index("list")] = f"a list of {nouns[name]}s"
            rule = f"must be {' or '.join(shapes)}, got {got}"
        elif not isinstance(value, Mapping):
            noun = nouns[name] + " " if name in nouns else ""
            rule = f"must be a {noun}dict with type {_options(tags)}, got {got}"
        else:
            loc.append("type")
            tag = value.get("type")
            rule = f"must be {_options(tags)}, got {describe(tag)}"
            if tag is None:
                rule = f"is required ({_options(tags)})"
    elif kind == "literal_error" and node is not None and "expected" in node:
        expected = [str(e) for e in node["expected"]]
        one = repr(expected[0]) if len(expected) == 1 else "one of " + ", ".join(expected)
        rule = f"must be {one}, got {describe(value)}"
    elif kind == "string_pattern_mismatch":
        why = text_problem(value) if isinstance(value, str) else None
        pattern = (err.get("ctx") or {}).get("pattern", "")
        rule = why or f"{patterns.get(pattern, err['msg'])}, got {describe(value)}"
    else:
        rule = _WORDS[kind](err.get("ctx") or {}, value) if kind in _WORDS else err["msg"]
    return Issue(tuple(loc), kind, rule, value, key)


def _locate(node: Any, parts: list[Any]) -> tuple[list[Any], Any, Any, bool]:
    """Follow an error's loc through the schema: the path without union tags, the schema node
    where the error arose, the last object schema on the way, and whether a dict key is wrong.
    """
    defs: dict[str, Any] = {}
    loc: list[Any] = []
    parent = None
    for i, part in enumerate(parts):
        node = _unwrap(node, defs)
        kind = node["type"] if node is not None else None
        if kind == "typed-dict":
            parent, field = node, node["fields"].get(part) if isinstance(part, str) else None
            node = field["schema"] if field else None
            part = part if isinstance(part, str) else describe(part)  # a key that is no str
        elif kind == "tagged-union":
            node = node["choices"].get(part)
            continue
        elif kind == "union":
            labelled = (c for c in node["choices"] if isinstance(c, tuple) and c[1] == part)
            node = next((c[0] for c in labelled), None)
            continue
        elif kind == "dict" and parts[i + 1 : i + 2] == ["[key]"]:
            loc.append(part)  # the rest are union tags inside the key's schema
            return loc, _unwrap(node.get("keys_schema"), defs), parent, True
        elif kind == "dict":
            node, part = node.get("values_schema"), f"[{describe(part)}]"
        elif node is not None:
            node = node.get("items_schema")
        loc.append(part)
    return loc, _unwrap(node, defs), parent, False


_Words = Callable[[dict[str, Any], Any], str]
_WORDS: dict[str, _Words] = {
    "invalid_key": lambda c, v: f"is not a field name (keys must be strings), got {describe(v)}",
    "string_type": lambda c, v: f"must be a string, got {type(v).__name__}",
    "string_unicode": lambda c, v: "must be valid Unicode (it contains a lone surrogate)",
    "string_too_short": lambda c, v: "must be a non-empty string",
    "string_too_long": lambda c, v: f"must be at most {c['max_length']} characters, got {len(v)}",
    "bool_type": lambda c, v: f"must be a bool (True or False), got {describe(v)}",
    "int_type": lambda c, v: f"must be an integer, got {describe(v)}",
    "float_type": lambda c, v: f"must be a number, got {describe(v)}",
    "finite_number": lambda c, v: f"must be a finite number, got {describe(v)}",
    "list_type": lambda c, v: f"must be a list, got {type(v).__name__}",
    "dict_type": lambda c, v: f"must be a dict, got {type(v).__name__}",
    "too_short": lambda c, v: "must not be an empty list (leave it out instead)",
    "too_long": lambda c, v: f"must have at most {c['max_length']} entries, got {len(v)}",
    "greater_than_equal": lambda c, v: f"must be >= {c['ge']}, got {describe(v)}",
    "less_than_equal": lambda c, v: f"must be <= {c['le']}, got {describe(v)}",
}
