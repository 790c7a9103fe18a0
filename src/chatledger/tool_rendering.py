"""Tool definitions rendered the way the model sees them: a TypeScript ``namespace functions``.

The API turns the ``tools`` of a request into text that joins the system prompt, and bills its
tokens. Two renderings are modelled, each fitted to recorded API figures (evidence in
``docs/tokens.md``):

* ``LEGACY`` (cl100k models, gpt-3.5 and gpt-4): hmarr/openai-chat-tokens' rendering. One
  ``// description`` comment per function and per top-level property, enums as literal unions,
  nested objects inline without their descriptions.
* ``CHAT`` (o200k models): every line of a description becomes a ``// line`` comment (lines
  stripped, blank lines dropped), property titles become ``// Title`` lines, defaults a
  trailing ``// default: X``, ``$ref`` is resolved against ``$defs``, and the root schema's (and
  array items') title and description open the object body. Two measured quirks go in
  :attr:`ToolBlock.adjust`; parts whose rendering is unknown go in :attr:`ToolBlock.margin`, text
  counted on top so that the estimate errs high.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["CHAT", "LEGACY", "RenderStyle", "ToolBlock", "has_nested_schema", "render_tools"]

_MAX_DEPTH = 16  # deeper (or recursive) schemas render as ``any``
# Schema keywords that cost tokens in a form not modelled: their JSON is counted twice (margin).
_UNMODELLED = frozenset(
    {
        "format",
        "pattern",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
        "uniqueItems",
        "examples",
        "patternProperties",
        "propertyNames",
        "not",
        "if",
        "then",
        "else",
    }
)


@dataclass(frozen=True, slots=True)
class RenderStyle:
    """Which rendering a model family gets (see the module docstring)."""

    kind: Literal["legacy", "chat"]

    @property
    def key(self) -> str:
        """Short stable id, part of a TokenCounter profile (bump ``v`` when rules change)."""
        return f"{self.kind}-v2"


LEGACY = RenderStyle("legacy")
CHAT = RenderStyle("chat")


@dataclass(frozen=True, slots=True)
class ToolBlock:
    """A rendered ``namespace functions`` block.

    ``text`` is what the model sees; ``adjust`` a measured per-block correction in tokens;
    ``margin`` extra text to count for parts whose rendering is not known (err high).
    """

    text: str
    adjust: int = 0
    margin: str = ""


def render_tools(tools: Sequence[Any], style: RenderStyle = CHAT) -> ToolBlock:
    """Render a ``tools`` (or legacy ``functions``) list for ``style``."""
    renderer = _Chat() if style.kind == "chat" else _Legacy()
    lines = ["namespace functions {", ""]
    for tool in tools:
        if not isinstance(tool, Mapping):
            continue
        kind = tool.get("type")
        if kind == "function" and isinstance(tool.get("function"), Mapping):
            renderer.function(lines, tool["function"])
        elif kind is None and "name" in tool:  # legacy `functions` entry
            renderer.function(lines, tool)
        elif kind == "custom" and isinstance(tool.get("custom"), Mapping):
            _custom(lines, tool["custom"], renderer.margin)
        else:  # unknown tool type: its JSON (estimate)
            lines.append(f"// {_json(tool)}")
            lines.append("")
    lines.append("} // namespace functions")
    return ToolBlock("\n".join(lines), renderer.adjust, "".join(renderer.margin))


def has_nested_schema(tool: Mapping[str, Any]) -> bool:
    """True when a tool's parameters nest an object (or a ``$ref``) inside a property."""
    fn = tool.get("function", tool)
    params = fn.get("parameters") if isinstance(fn, Mapping) else None
    props = params.get("properties") if isinstance(params, Mapping) else None
    if not isinstance(props, Mapping):
        return False
    text = json.dumps(list(props.values()), default=str)
    return '"properties"' in text or '"$ref"' in text


# --- helpers ---------------------------------------------------------------------------------


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":"))


def _literal(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return _json(value)


def _comment_lines(text: str) -> list[str]:
    """Each non-blank line as a ``// line`` comment, leading whitespace dropped."""
    return [f"// {line.strip()}" for line in text.strip().splitlines() if line.strip()]


def _custom(lines: list[str], tool: Mapping[str, Any], margin: list[str]) -> None:
    """Custom (free-form input) tools: no published rendering; estimate as a string function
    plus the text of its grammar as comments, the grammar counted once more as margin (one
    recorded gpt-5 figure is 42 above the comments alone)."""
    desc = tool.get("description")
    if isinstance(desc, str) and desc:
        lines.extend(_comment_lines(desc))
    fmt = tool.get("format")
    if isinstance(fmt, Mapping) and fmt.get("type") == "grammar":
        inner = fmt.get("grammar")
        grammar: Mapping[str, Any] = inner if isinstance(inner, Mapping) else fmt
        lines.append(f"// {grammar.get('syntax', 'grammar')}:")
        definition = str(grammar.get("definition", ""))
        lines.extend(f"// {line}" for line in definition.splitlines())
        margin.append(definition)
    lines.append(f"type {tool.get('name', '')} = (_: string) => any;")
    lines.append("")


def _resolver(params: Any) -> Callable[[Any], Any]:
    """Resolve ``$ref`` against the root schema's ``$defs`` (siblings of the ``$ref`` win)."""
    defs = params.get("$defs", params.get("definitions")) if isinstance(params, Mapping) else None
    table: Mapping[str, Any] = defs if isinstance(defs, Mapping) else {}

    def resolve(schema: Any) -> Any:
        if isinstance(schema, Mapping) and isinstance(schema.get("$ref"), str):
            target = table.get(schema["$ref"].rsplit("/", 1)[-1])
            if isinstance(target, Mapping):
                return {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return schema

    return resolve


class _Legacy:
    """hmarr/openai-chat-tokens (src/functions.ts): matches its API-recorded gpt-3.5 cases;
    ``$ref`` resolved (recorded gpt-4-0613 figures)."""

    def __init__(self) -> None:
        self.adjust = 0
        self.margin: list[str] = []
        self._resolve: Callable[[Any], Any] = _resolver(None)

    def function(self, lines: list[str], fn: Mapping[str, Any]) -> None:
        desc = fn.get("description")
        if desc:
            lines.append(f"// {desc}")
        params = fn.get("parameters")
        name = fn.get("name", "")
        self._resolve = _resolver(params)
        if isinstance(params, Mapping) and params.get("properties"):
            lines.append(f"type {name} = (_: {{")
            lines.append(self._properties(params, 0))
            lines.append("}) => any;")
        else:
            lines.append(f"type {name} = () => any;")
        lines.append("")

    def _type(self, schema: Any, indent: int) -> str:
        schema = self._resolve(schema)
        if not isinstance(schema, Mapping) or indent > 2 * _MAX_DEPTH:
            return "any"
        for key in ("anyOf", "oneOf"):
            options = schema.get(key)
            if isinstance(options, Sequence) and not isinstance(options, str):
                return " | ".join(self._type(o, indent) for o in options)
        kind = schema.get("type")
        if isinstance(kind, list):
            return " | ".join(self._type({**schema, "type": k}, indent) for k in kind)
        enum = schema.get("enum")
        if kind == "string":
            return " | ".join(f'"{v}"' for v in enum) if isinstance(enum, list) else "string"
        if kind in ("number", "integer"):
            return " | ".join(_literal(v) for v in enum) if isinstance(enum, list) else "number"
        if kind in ("boolean", "null"):
            return str(kind)
        if kind == "object":
            return "\n".join(["{", self._properties(schema, indent + 2), "}"])
        if kind == "array":
            items = schema.get("items")
            return f"{self._type(items, indent)}[]" if isinstance(items, Mapping) else "any[]"
        if isinstance(enum, list):
            return " | ".join(_literal(v) for v in enum)
        return "any"

    def _properties(self, schema: Mapping[str, Any], indent: int) -> str:
        props = schema.get("properties")
        if not isinstance(props, Mapping):
            return ""
        required = schema.get("required")
        required = required if isinstance(required, list) else []
        lines: list[str] = []
        for name, raw in props.items():
            prop = self._resolve(raw)
            desc = prop.get("description") if isinstance(prop, Mapping) else None
            if desc and indent < 2:  # nested descriptions are not rendered
                lines.append(f"// {desc}")
            optional = "" if name in required else "?"
            lines.append(f"{name}{optional}: {self._type(prop, indent)},")
        pad = " " * indent
        return "\n".join(pad + line for line in lines)


class _Chat:
    """The o200k rendering (fitted to recorded gpt-4o / gpt-4.1 figures)."""

    def __init__(self) -> None:
        self.adjust = 0
        self.margin: list[str] = []
        self._defs: Mapping[str, Any] = {}

    def function(self, lines: list[str], fn: Mapping[str, Any]) -> None:
        desc = fn.get("description")
        if isinstance(desc, str):
            lines.extend(_comment_lines(desc))
        params = fn.get("parameters")
        name = fn.get("name", "")
        if isinstance(params, Mapping) and isinstance(params.get("properties"), Mapping):
            props = params["properties"]
        else:
            props = None
        if props:
            assert isinstance(params, Mapping)
            defs = params.get("$defs", params.get("definitions"))
            self._defs = defs if isinstance(defs, Mapping) else {}
            body = self._object(params, 0, header=True)
            lines.append(f"type {name} = (_: {body}) => any;")
            first = self._resolve(next(iter(props.values())))
            if not (first.get("description") or first.get("title") or "default" in first):
                self.adjust -= 1  # measured: a bare first property costs one token less
        else:
            lines.append(f"type {name} = () => any;")
        lines.append("")

    def _resolve(self, schema: Any) -> Mapping[str, Any]:
        if not isinstance(schema, Mapping):
            return {}
        ref = schema.get("$ref")
        if isinstance(ref, str):
            target = self._defs.get(ref.rsplit("/", 1)[-1])
            if isinstance(target, Mapping):
                return {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return schema

    def _unmodelled(self, schema: Mapping[str, Any]) -> None:
        for key in _UNMODELLED.intersection(schema):
            self.margin.append(2 * _json({key: schema[key]}))

    def _object(self, schema: Mapping[str, Any], depth: int, *, header: bool) -> str:
        props = schema.get("properties")
        if not isinstance(props, Mapping) or not props:
            return "object"  # measured within a token of the API (estimate)
        out = ["{"]
        if header:
            title = schema.get("title")
            if isinstance(title, str) and title:
                out.append(f"// {title}")
            desc = schema.get("description")
            if isinstance(desc, str) and desc.strip():
                out.extend(_comment_lines(desc))
                if depth == 0:
                    self.adjust += 1  # measured: the root description costs one more token
        required = schema.get("required")
        required = required if isinstance(required, list) else []
        in_items = depth > 0 and header
        for name, raw in props.items():
            prop = self._resolve(raw)
            title = prop.get("title")
            if isinstance(title, str) and title:
                out.append(f"// {title}")
            desc = prop.get("description")
            if isinstance(desc, str) and desc.strip():
                comments = _comment_lines(desc)
                out.extend(comments)
                if in_items:  # descriptions inside array items: form unknown (estimate)
                    self.margin.append("\n".join(comments))
            line = f"{name}{'' if name in required else '?'}: {self._type(prop, depth + 1)},"
            if "default" in prop:
                default = prop["default"]
                if isinstance(default, str) and not isinstance(prop.get("enum"), list):
                    line += f' // default: "{default}"'
                elif isinstance(default, str):
                    line += f" // default: {default}"
                else:
                    line += f" // default: {_literal(default)}"
            out.append(line)
        out.append("}")
        return "\n".join(out)

    def _type(self, raw: Any, depth: int, *, item: bool = False) -> str:
        if depth > _MAX_DEPTH:
            return "any"
        schema = self._resolve(raw)
        if not schema:
            return "any"
        self._unmodelled(schema)
        for key in ("anyOf", "oneOf"):
            options = schema.get(key)
            if isinstance(options, list) and options:
                return " | ".join(self._type(o, depth + 1) for o in options)
        all_of = schema.get("allOf")
        if isinstance(all_of, list) and len(all_of) == 1 and isinstance(all_of[0], Mapping):
            rest = {k: v for k, v in schema.items() if k != "allOf"}
            return self._type({**self._resolve(all_of[0]), **rest}, depth + 1, item=item)
        kind = schema.get("type")
        if isinstance(kind, list):
            return " | ".join("number" if k == "integer" else str(k) for k in kind)
        enum = schema.get("enum")
        if isinstance(enum, list) and enum:
            return " | ".join(_literal(v) for v in enum)
        if kind == "object" or (kind is None and "properties" in schema):
            return self._object(schema, depth, header=item)
        if kind == "array":
            items = schema.get("items")
            if isinstance(items, Mapping):
                return f"{self._type(items, depth + 1, item=True)}[]"
            return "any[]"
        if kind in ("string", "boolean", "null"):
            return str(kind)
        if kind in ("number", "integer"):
            return "number"
        return "any"
