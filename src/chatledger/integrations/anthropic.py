"""Send a chatledger window to Anthropic's Messages API.

chatledger stores and windows messages in the OpenAI Chat Completions format. Anthropic's
Messages API takes the same conversation in another shape: the system prompt apart, strictly
alternating ``user`` / ``assistant`` turns made of content blocks, tool calls as ``tool_use``
blocks and their results as ``tool_result`` blocks inside a user turn. :func:`to_anthropic`
converts one to the other, :func:`anthropic_tools` the tool definitions; both are pure
functions with no dependency on the ``anthropic`` SDK::

    system, messages = to_anthropic(conv.window(cl.TokenBudget(8000)))
    client.messages.create(
        model="claude-sonnet-4-5", max_tokens=1024, system=system or NOT_GIVEN,
        messages=messages, tools=anthropic_tools(tools),
    )

The token budget is counted with the conversation's OpenAI tokenizer, so it is an estimate of
what Anthropic will count, not an exact figure.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, overload

from chatledger.errors import InvalidArgumentError

__all__ = ["anthropic_tools", "to_anthropic"]

_SYSTEM_ROLES = ("system", "developer")


def _bad(problem: str) -> InvalidArgumentError:
    """What Anthropic cannot carry, as chatledger's typed error (a ValueError too)."""
    where, _, rule = problem.partition(": ")
    return InvalidArgumentError(where, rule)


def _data_url(url: str, where: str) -> tuple[str, str]:
    """``data:<media type>;base64,<data>`` as (media type, data)."""
    head, sep, data = url.partition(",")
    if not sep or not head.startswith("data:") or not head.endswith(";base64"):
        raise _bad(f"{where}: only base64 data URLs can be converted, got {url[:40]!r}")
    return head[len("data:") : -len(";base64")], data


def _text_of(content: object, where: str) -> str:
    """The text of a system/developer message: its string, or its text parts joined."""
    if isinstance(content, str):
        return content
    texts: list[str] = []
    for i, part in enumerate(_parts(content, where)):
        if part.get("type") != "text":
            raise _bad(f"{where}.content[{i}]: only text parts can go in the system prompt")
        texts.append(str(part.get("text", "")))
    return "\n".join(texts)


def _parts(content: object, where: str) -> list[Mapping[str, Any]]:
    if not isinstance(content, (list, tuple)) or not all(isinstance(p, Mapping) for p in content):
        raise _bad(f"{where}.content: must be a string or a list of content parts")
    return list(content)


def _block(part: Mapping[str, Any], where: str) -> dict[str, Any] | None:
    """One OpenAI content part as an Anthropic content block (None for empty text)."""
    kind = part.get("type")
    if kind in ("text", "refusal"):
        text = str(part.get(kind) or "")
        return {"type": "text", "text": text} if text else None
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, Mapping) else None
        if not isinstance(url, str):
            raise _bad(f"{where}: an image_url part needs image_url.url")
        if url.startswith(("http://", "https://")):
            return {"type": "image", "source": {"type": "url", "url": url}}
        media_type, data = _data_url(url, where)
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }
    if kind == "file":
        file = part.get("file")
        file_data = file.get("file_data") if isinstance(file, Mapping) else None
        if not isinstance(file_data, str):
            raise _bad(
                f"{where}: a file part can be converted only with inline file_data "
                "(Anthropic cannot read OpenAI file ids)"
            )
        if file_data.startswith("data:"):
            media_type, data = _data_url(file_data, where)
        else:
            # the one file type Chat Completions accepts inline
            media_type, data = "application/pdf", file_data
        return {
            "type": "document",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }
    raise _bad(f"{where}: a {kind!r} content part has no Anthropic equivalent")


def _blocks(content: object, where: str) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    out: list[dict[str, Any]] = []
    for i, part in enumerate(_parts(content, where)):
        block = _block(part, f"{where}.content[{i}]")
        if block is not None:
            out.append(block)
    return out


def _tool_use(call: Mapping[str, Any], where: str) -> dict[str, Any]:
    if call.get("type", "function") != "function":
        raise _bad(f"{where}: a {call.get('type')!r} tool call has no Anthropic equivalent")
    fn = call.get("function")
    if not isinstance(fn, Mapping):
        raise _bad(f"{where}: a tool call needs a function")
    arguments = fn.get("arguments") or "{}"
    try:
        parsed = json.loads(arguments)
    except (TypeError, ValueError):
        raise _bad(f"{where}.function.arguments: must be a JSON object") from None
    if not isinstance(parsed, dict):
        raise _bad(f"{where}.function.arguments: must be a JSON object (tool_use.input)")
    return {"type": "tool_use", "id": call.get("id"), "name": fn.get("name"), "input": parsed}


def _tool_result(msg: Mapping[str, Any], where: str) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": msg.get("tool_call_id")}
    content = msg.get("content")
    if isinstance(content, str):
        if content:
            block["content"] = content
    elif content:
        block["content"] = _blocks(content, where)
    return block


_EPHEMERAL = {"type": "ephemeral"}


@overload
def to_anthropic(
    messages: Iterable[Mapping[str, Any]], *, cache: Literal[False] = False
) -> tuple[str | None, list[dict[str, Any]]]: ...
@overload
def to_anthropic(
    messages: Iterable[Mapping[str, Any]], *, cache: Literal[True]
) -> tuple[list[dict[str, Any]] | None, list[dict[str, Any]]]: ...
def to_anthropic(
    messages: Iterable[Mapping[str, Any]], *, cache: bool = False
) -> tuple[str | list[dict[str, Any]] | None, list[dict[str, Any]]]:
    """An OpenAI-format ``messages`` array (``conv.window()``) as ``(system, messages)``.

    ``cache=True`` places Anthropic's ``cache_control`` breakpoints (three, of the four the
    API allows) on what stays the same from one turn to the next: the system prompt (which
    then comes as a list of text blocks; tools are cached with it), the last block before the
    newest user turn (this turn reads the cache up to there), and the last block of all (the
    next turn reads it). With :class:`~chatledger.StablePrefix` the window's start holds
    still, so each turn finds the previous one's prefix in the cache.

    - ``system`` and ``developer`` messages, wherever they are (a summary a strategy inserts
      is one), are joined in order with a blank line into the ``system`` string; None if
      there are none. A message's text parts are joined with a newline.
    - User and assistant content becomes a list of blocks: ``text``; ``image`` with a
      ``base64`` source from a data URL or a ``url`` source from an http(s) URL (``detail``
      is dropped); ``document`` from a file part's inline ``file_data``. Empty text is left
      out, and so is a message left with no blocks.
    - An assistant's ``refusal`` is a ``text`` block; each of its ``tool_calls`` a
      ``tool_use`` block after its text, ``input`` being the parsed ``arguments``.
    - Tool messages become ``tool_result`` blocks (``tool_use_id``; ``content`` as given,
      left out when empty) in a ``user`` turn.
    - Consecutive turns of the same role are merged into one, since the API requires
      alternation; so parallel tool results form one user turn, and a user message that
      follows tool results joins their turn, after them, as the API requires.
    - ``name`` fields are dropped: the Messages API has no per-message names.

    A window starting with an assistant turn (a window cut after a long assistant step) is
    returned as it is: nothing is invented in front of it; the API may refuse it.

    Raises :class:`~chatledger.InvalidArgumentError` (a ValueError) for what Anthropic
    cannot carry: audio, OpenAI file ids, legacy ``function_call`` / ``function``
    messages, custom (free-text) tool calls, tool call arguments that are not a JSON object.
    """
    system: list[str] = []
    turns: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        if not blocks:
            return
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})

    for i, msg in enumerate(messages):
        where = f"messages[{i}]"
        role = msg.get("role")
        if role in _SYSTEM_ROLES:
            system.append(_text_of(msg.get("content", ""), where))
        elif role == "user":
            add("user", _blocks(msg.get("content"), where))
        elif role == "assistant":
            if msg.get("audio") is not None or msg.get("function_call") is not None:
                raise _bad(f"{where}: assistant audio and function_call cannot be converted")
            blocks = _blocks(msg.get("content"), where)
            if msg.get("refusal"):
                blocks.append({"type": "text", "text": str(msg["refusal"])})
            calls: Sequence[Mapping[str, Any]] = msg.get("tool_calls") or ()
            blocks += [_tool_use(c, f"{where}.tool_calls[{k}]") for k, c in enumerate(calls)]
            add("assistant", blocks)
        elif role == "tool":
            add("user", [_tool_result(msg, where)])
        else:
            raise _bad(f"{where}: a {role!r} message has no Anthropic equivalent")
    if not cache:
        return ("\n\n".join(system) if system else None), turns
    system_blocks: list[dict[str, Any]] | None = None
    if system:
        text = "\n\n".join(system)
        system_blocks = [{"type": "text", "text": text, "cache_control": _EPHEMERAL}]
    users = [i for i, t in enumerate(turns) if t["role"] == "user"]
    marks = {len(turns) - 1}
    if users and users[-1] > 0:
        marks.add(users[-1] - 1)
    for i in marks:
        if i >= 0:
            last = turns[i]["content"][-1]
            turns[i]["content"][-1] = {**last, "cache_control": _EPHEMERAL}
    return system_blocks, turns


def anthropic_tools(openai_tools: Iterable[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    """OpenAI tool definitions (``{"type": "function", "function": {...}}``) as Anthropic
    tools: ``name``, ``description`` (when given) and ``input_schema`` (the ``parameters``
    JSON schema, or an empty object schema). ``strict`` is dropped. The flat Responses form
    (``{"type": "function", "name": ...}``) is accepted too; other tool types raise."""
    out: list[dict[str, Any]] = []
    for i, tool in enumerate(openai_tools or ()):
        if tool.get("type", "function") != "function":
            raise _bad(f"tools[{i}]: a {tool.get('type')!r} tool has no Anthropic equivalent")
        fn = tool.get("function", tool)
        if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
            raise _bad(f"tools[{i}]: needs function.name")
        converted: dict[str, Any] = {"name": fn["name"]}
        if fn.get("description"):
            converted["description"] = fn["description"]
        converted["input_schema"] = dict(
            fn.get("parameters") or {"type": "object", "properties": {}}
        )
        out.append(converted)
    return out
