"""Bundled BPE encodings and the model -> encoding table.

tiktoken's own loaders download the rank files on first use and cache them under a temp
directory; a server may have no network and a read-only /tmp. So the two encodings that current
chat models use ship inside the package, are checked against the sha256 that tiktoken itself
pins, and are turned into :class:`tiktoken.Encoding` objects here, never through
``tiktoken.get_encoding``.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import re
import warnings
from collections.abc import Callable
from importlib import resources

import tiktoken
import tiktoken.model

from chatledger.errors import EncodingIntegrityError, UnknownModelWarning

__all__ = [
    "BUNDLED_ENCODINGS",
    "DEFAULT_ENCODING",
    "LONG_TEXT",
    "chunked_len",
    "encoding_name_for_model",
    "has_long_whitespace",
    "load_encoding",
    "normalize_model",
]

O200K_BASE = "o200k_base"
CL100K_BASE = "cl100k_base"
DEFAULT_ENCODING = O200K_BASE
BUNDLED_ENCODINGS: tuple[str, ...] = (O200K_BASE, CL100K_BASE)

_ENDOFTEXT = "<|endoftext|>"
_FIM_PREFIX = "<|fim_prefix|>"
_FIM_MIDDLE = "<|fim_middle|>"
_FIM_SUFFIX = "<|fim_suffix|>"
_ENDOFPROMPT = "<|endofprompt|>"

# Same split patterns and special tokens as tiktoken_ext.openai_public (tiktoken 0.14).
_CL100K_PAT = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
_O200K_PAT = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"""
        r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"""
        r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)

_SPECS: dict[str, tuple[str, dict[str, int]]] = {
    CL100K_BASE: (
        _CL100K_PAT,
        {
            _ENDOFTEXT: 100257,
            _FIM_PREFIX: 100258,
            _FIM_MIDDLE: 100259,
            _FIM_SUFFIX: 100260,
            _ENDOFPROMPT: 100276,
        },
    ),
    O200K_BASE: (_O200K_PAT, {_ENDOFTEXT: 199999, _ENDOFPROMPT: 200018}),
}

_PACKAGE = "chatledger._encodings"


@functools.cache
def _expected_digests() -> dict[str, str]:
    """Parse ``SHA256SUMS`` (``<hex>  <file>`` lines, as sha256sum writes them)."""
    text = resources.files(_PACKAGE).joinpath("SHA256SUMS").read_text(encoding="ascii")
    digests: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            digests[parts[1].lstrip("*")] = parts[0].lower()
    return digests


def _parse_ranks(data: bytes, filename: str) -> dict[bytes, int]:
    """Parse the ``base64token rank`` lines of a ``.tiktoken`` file."""
    ranks: dict[bytes, int] = {}
    for lineno, line in enumerate(data.splitlines(), start=1):
        if not line:
            continue
        try:
            token_b64, rank = line.split()
            ranks[base64.b64decode(token_b64, validate=True)] = int(rank)
        except (ValueError, binascii.Error) as exc:
            raise EncodingIntegrityError(f"{filename}: malformed line {lineno}") from exc
    return ranks


@functools.cache
def load_encoding(name: str) -> tiktoken.Encoding:
    """Build the bundled encoding ``name``, verified against ``SHA256SUMS``; cached per process.

    Raises :class:`EncodingIntegrityError` when the file is missing, altered or malformed, since
    every count made with a wrong vocabulary would be silently wrong.
    """
    if name not in _SPECS:
        raise ValueError(f"encoding {name!r} is not bundled; choose one of {BUNDLED_ENCODINGS}")
    filename = f"{name}.tiktoken"
    expected = _expected_digests().get(filename)
    if expected is None:
        raise EncodingIntegrityError(f"{filename}: no sha256 recorded in SHA256SUMS")
    try:
        data = resources.files(_PACKAGE).joinpath(filename).read_bytes()
    except FileNotFoundError as exc:
        raise EncodingIntegrityError(f"{filename}: missing from the package") from exc
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise EncodingIntegrityError(f"{filename}: sha256 is {actual}, expected {expected}")
    pat_str, special_tokens = _SPECS[name]
    return tiktoken.Encoding(
        name=name,
        pat_str=pat_str,
        mergeable_ranks=_parse_ranks(data, filename),
        special_tokens=dict(special_tokens),
    )


# Longest prefix wins; order does not matter because matching sorts by length.
_PREFIXES: dict[str, str] = {
    "gpt-5": O200K_BASE,
    "gpt-4.1": O200K_BASE,
    "gpt-4.5": O200K_BASE,
    "gpt-4o": O200K_BASE,
    "chatgpt-4o": O200K_BASE,
    "o1": O200K_BASE,
    "o3": O200K_BASE,
    "o4": O200K_BASE,
    "gpt-oss": O200K_BASE,  # o200k_harmony = o200k_base ranks + extra specials
    "codex-mini": O200K_BASE,
    "computer-use": O200K_BASE,
    "gpt-4": CL100K_BASE,
    "gpt-3.5": CL100K_BASE,
    "gpt-35": CL100K_BASE,
}
_PREFIX_ORDER: tuple[tuple[str, str], ...] = tuple(
    sorted(_PREFIXES.items(), key=lambda item: len(item[0]), reverse=True)
)
# Encodings tiktoken may name that share their ranks with a bundled one.
_ALIASES = {"o200k_harmony": O200K_BASE}


def normalize_model(model: str) -> str:
    """Reduce a model id to its base name: drop ``openai/`` and fine-tune decorations.

    ``ft:gpt-4o-mini-2024-07-18:org::id`` -> ``gpt-4o-mini-2024-07-18``;
    ``openai/gpt-4o`` -> ``gpt-4o``. Case is folded since routers disagree on it.
    """
    name = model.strip().lower()
    if name.startswith("openai/"):
        name = name[len("openai/") :]
    if name.startswith("ft:"):
        name = name[3:].split(":", 1)[0]
    return name


@functools.lru_cache(maxsize=256)
def _resolve(name: str) -> tuple[str, str | None]:
    """Cached lookup: (encoding, reason it is a guess or None)."""
    for prefix, encoding in _PREFIX_ORDER:
        if name.startswith(prefix):
            return encoding, None
    found: str | None = tiktoken.model.MODEL_TO_ENCODING.get(name)
    if found is None:
        for prefix, encoding in tiktoken.model.MODEL_PREFIX_TO_ENCODING.items():
            if name.startswith(prefix):
                found = encoding
                break
    if found is not None:
        found = _ALIASES.get(found, found)
        if found in _SPECS:
            return found, None
        return DEFAULT_ENCODING, f"uses {found}, which is not bundled"
    return DEFAULT_ENCODING, "is not a known model"


def encoding_name_for_model(model: str, *, stacklevel: int = 2) -> str:
    """Name of the bundled encoding ``model`` uses, without touching the network.

    Our own prefix table first (it knows newer families), then tiktoken's pure-dict tables,
    else ``o200k_base`` with an :class:`UnknownModelWarning`, because every current OpenAI chat
    model uses it.
    """
    encoding, reason = _resolve(normalize_model(model))
    if reason is not None:
        warnings.warn(
            f"{model!r} {reason}; counting with {encoding}",
            UnknownModelWarning,
            stacklevel=stacklevel,
        )
    return encoding


# --- counting texts tiktoken cannot take whole -------------------------------------------------

LONG_TEXT = 1 << 16
"""Texts at least this long are checked for whitespace runs as long: tiktoken's split regex
overflows its stack on runs of about 1M whitespace chars (a PyO3 PanicException, which is a
BaseException and escapes ``except Exception``)."""
_LONG_SPACE = re.compile(r"\s{%d,}" % LONG_TEXT)  # noqa: UP031 (a regex quantifier)
CHUNK = 4096


def has_long_whitespace(text: str) -> bool:
    """True when ``text`` has a whitespace run that :func:`chunked_len` cuts."""
    return len(text) >= LONG_TEXT and _LONG_SPACE.search(text) is not None


def chunked_len(text: str, encode: Callable[[str], list[int]]) -> int:
    """Token count of a text whose long whitespace runs are cut every ``CHUNK`` chars, each cut
    counted one token more: on every run length, whitespace kind and neighbour measured (tests)
    this is never under the exact count, and at most one token per cut over it."""
    if not has_long_whitespace(text):
        return len(encode(text))
    n, start = 0, 0
    for run in _LONG_SPACE.finditer(text):
        for cut in range(run.start() + CHUNK, run.end() - 1, CHUNK):
            n += len(encode(text[start:cut])) + 1
            start = cut
    return n + len(encode(text[start:]))
