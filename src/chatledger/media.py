"""Media token costs: images (tiles or patches), input audio (seconds), PDF files (pages).

Images follow the published formulas; audio and PDF costs are documented estimates. Sizes,
durations and page counts are sniffed from the bytes' headers, without Pillow.

Image source: OpenAI "Images and vision" guide, section "Calculating costs"
(https://platform.openai.com/docs/guides/images-vision#calculating-costs). Two families:

* **tiles** (gpt-4o, gpt-4.1, gpt-4.5, gpt-5, gpt-4o-mini, o1/o3, computer-use-preview):
  ``detail: low`` costs the base; otherwise fit in 2048x2048, shrink the shortest side to 768,
  and pay ``base + tile * (number of 512px tiles)``.
* **patches** (gpt-4.1-mini/nano, o4-mini, gpt-5-mini/nano): ``detail`` is ignored; count 32px
  patches, shrink to at most 1536 patches, multiply by a per-model factor.

Dimensions come from the image header of a base64 ``data:`` URL (PNG, JPEG, GIF, WEBP), parsed
here without Pillow. When they cannot be known (an ``http(s)`` URL, a file id, a broken header)
the **worst case** for the model is charged, so a budget computed from these counts is never
exceeded by an image: ``base + 8 * tile`` for tile models (at most 2x4 tiles survive the
resizing), ``ceil(1536 * factor)`` for patch models.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "AUDIO_TOKENS_PER_SECOND",
    "PDF_TEXT_TOKENS_PER_PAGE",
    "ImageRule",
    "audio_tokens",
    "file_tokens",
    "image_dimensions",
    "image_rule_for_model",
    "image_tokens",
    "patch_count",
    "pdf_pages",
    "tile_count",
]

_PATCH = 32
_MAX_PATCHES = 1536
_TILE = 512
_FIT_BOX = 2048
_SHORT_SIDE = 768
_MAX_TILES = math.ceil(_SHORT_SIDE / _TILE) * math.ceil(_FIT_BOX / _TILE)  # 2 * 4


@dataclass(frozen=True, slots=True)
class ImageRule:
    """How one model family prices an image.

    ``overhead`` is a per-image constant added on top of the documented count: 1 for patch
    models, observed in recorded usage (gpt-4.1-mini and gpt-4.1-nano bill one token more per
    image than the formula), 0 for tile models, whose recorded usage matches the formula.
    """

    kind: Literal["tile", "patch"]
    base: int = 0
    tile: int = 0
    multiplier: float = 1.0
    overhead: int = 0

    @property
    def key(self) -> str:
        """Short stable id, part of a TokenCounter profile."""
        if self.kind == "tile":
            return f"tile{self.base}+{self.tile}"
        return f"patch{self.multiplier:g}+{self.overhead}"

    def worst_case(self, detail: str = "auto") -> int:
        """The most tokens one image can cost under this rule (unknown size)."""
        if self.kind == "tile":
            if detail == "low":
                return self.base
            return self.base + self.tile * _MAX_TILES
        return math.ceil(_MAX_PATCHES * self.multiplier) + self.overhead

    def tokens(self, width: int, height: int, detail: str = "auto") -> int:
        """Tokens for an image of known size."""
        if self.kind == "tile":
            if detail == "low":
                return self.base
            return self.base + self.tile * tile_count(width, height)
        return math.ceil(patch_count(width, height) * self.multiplier) + self.overhead


_TILE_4O = ImageRule("tile", base=85, tile=170)
_TILE_4O_MINI = ImageRule("tile", base=2833, tile=5667)
_TILE_GPT5 = ImageRule("tile", base=70, tile=140)
_TILE_O_SERIES = ImageRule("tile", base=75, tile=150)
_TILE_CUA = ImageRule("tile", base=65, tile=129)

# Longest matching prefix wins. Model names are normalised by chatledger.encodings.normalize_model.
_RULES: dict[str, ImageRule] = {
    "gpt-4.1-mini": ImageRule("patch", multiplier=1.62, overhead=1),
    "gpt-4.1-nano": ImageRule("patch", multiplier=2.46, overhead=1),
    "o4-mini": ImageRule("patch", multiplier=1.72, overhead=1),
    "gpt-5-mini": ImageRule("patch", multiplier=1.2, overhead=1),  # recorded, not the docs 1.62
    "gpt-5-nano": ImageRule("patch", multiplier=1.5, overhead=1),  # recorded, not the docs 2.46
    "gpt-5": _TILE_GPT5,
    "gpt-4o-mini": _TILE_4O_MINI,
    "gpt-4o": _TILE_4O,
    "chatgpt-4o": _TILE_4O,
    "gpt-4.1": _TILE_4O,
    "gpt-4.5": _TILE_4O,
    "gpt-4": _TILE_4O,  # gpt-4-turbo / gpt-4-vision-preview
    "o1": _TILE_O_SERIES,
    "o3": _TILE_O_SERIES,
    "computer-use": _TILE_CUA,
}
_RULE_ORDER = tuple(sorted(_RULES.items(), key=lambda item: len(item[0]), reverse=True))
DEFAULT_RULE = _TILE_4O


def image_rule_for_model(normalized_model: str) -> ImageRule:
    """The image rule of a (normalised) model name; gpt-4o's for unknown models."""
    for prefix, rule in _RULE_ORDER:
        if normalized_model.startswith(prefix):
            return rule
    return DEFAULT_RULE


def tile_count(width: int, height: int) -> int:
    """512px tiles after the high-detail resizing.

    Resized sides are rounded half-to-even: recorded gpt-4.1 usage bills 2049x513 as 8 tiles and
    2050x513 as 4 (512.75 -> 513 but 512.5 -> 512).
    """
    w, h = _fit(width, height)
    if min(w, h) > _SHORT_SIDE:
        scale = _SHORT_SIDE / min(w, h)
        w, h = max(1.0, float(round(w * scale))), max(1.0, float(round(h * scale)))
    return max(1, math.ceil(w / _TILE) * math.ceil(h / _TILE))


def _fit(width: int, height: int) -> tuple[float, float]:
    """Fit in 2048x2048 (never enlarge); a side never shrinks below one pixel, so an extreme
    aspect ratio (8193x1) still costs a tile."""
    w, h = max(1.0, float(width)), max(1.0, float(height))
    if max(w, h) > _FIT_BOX:
        scale = _FIT_BOX / max(w, h)
        w, h = max(1.0, float(round(w * scale))), max(1.0, float(round(h * scale)))
    return w, h


def patch_count(width: int, height: int) -> int:
    """32px patches, shrunk to at most 1536 as the docs describe.

    The image is first fitted in 2048x2048 (not in the docs, but recorded usage bills a
    4000x1474 image at the 1536 cap that this step yields; the docs' own examples are unchanged
    by it), then, above 1536 patches, scaled by ``r`` so a whole number of patches covers the
    limiting side.
    """
    w, h = _fit(width, height)
    raw = math.ceil(w / _PATCH) * math.ceil(h / _PATCH)
    if raw <= _MAX_PATCHES:
        return raw
    r = math.sqrt(_PATCH * _PATCH * _MAX_PATCHES / (w * h))
    pw, ph = w * r / _PATCH, h * r / _PATCH
    r *= min(math.floor(pw) / pw, math.floor(ph) / ph)
    # Whole pixels, as in the docs' example (1086 * 33/33.94 -> 1056, 1448 -> 1408).
    rw, rh = max(1, math.floor(w * r + 1e-6)), max(1, math.floor(h * r + 1e-6))
    return max(1, min(math.ceil(rw / _PATCH) * math.ceil(rh / _PATCH), _MAX_PATCHES))


# --- header parsers -------------------------------------------------------------------------

_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _png(data: bytes) -> tuple[int, int] | None:
    if len(data) >= 24 and data[12:16] == b"IHDR":
        w, h = struct.unpack(">II", data[16:24])
        return int(w), int(h)
    return None


def _gif(data: bytes) -> tuple[int, int] | None:
    if len(data) >= 10:
        w, h = struct.unpack("<HH", data[6:10])
        return int(w), int(h)
    return None


def _jpeg(data: bytes) -> tuple[int, int] | None:
    """Walk the marker segments to the first SOFn (baseline, progressive, lossless...)."""
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # TEM, RSTn: no length
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if marker in _SOF_MARKERS:
            if i + 9 > n:
                return None
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return int(w), int(h)
        if marker == 0xDA:  # start of scan before any SOF: malformed
            return None
        i += 2 + length
    return None


def _webp(data: bytes) -> tuple[int, int] | None:
    if len(data) < 30:
        return None
    chunk = data[12:16]
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        w, h = struct.unpack("<HH", data[26:30])
        return int(w & 0x3FFF), int(h & 0x3FFF)
    if chunk == b"VP8L" and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        w = int.from_bytes(data[24:27], "little") + 1
        h = int.from_bytes(data[27:30], "little") + 1
        return w, h
    return None


def _dimensions(data: bytes) -> tuple[int, int] | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return _png(data)
    if data.startswith(b"\xff\xd8"):
        return _jpeg(data)
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return _gif(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp(data)
    return None


def _b64decode(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=False)
    except (binascii.Error, ValueError):
        return None


_HEAD_CHARS = 64 * 1024  # base64 chars tried first: enough for every header but big JPEG APPn


def image_dimensions(url: str) -> tuple[int, int] | None:
    """Width and height of a base64 ``data:`` URL image, or None when not knowable."""
    if not url.startswith("data:"):
        return None
    header, sep, payload = url.partition(",")
    if not sep or ";base64" not in header:
        return None
    payload = payload.strip()
    head = _b64decode(payload[: _HEAD_CHARS - _HEAD_CHARS % 4])
    found = _dimensions(head) if head else None
    if found is None and len(payload) > _HEAD_CHARS:
        whole = _b64decode(payload)
        found = _dimensions(whole) if whole else None
    if found is None or found[0] <= 0 or found[1] <= 0:
        return None
    return found


def image_tokens(url: str, detail: str, rule: ImageRule) -> int:
    """Tokens one ``image_url`` part costs; the rule's worst case when the size is unknown."""
    detail = detail if detail in ("low", "high") else "auto"
    if rule.kind == "tile" and detail == "low":
        return rule.base
    size = image_dimensions(url)
    if size is None:
        return rule.worst_case(detail)
    return rule.tokens(size[0], size[1], detail)


# --- audio and files ------------------------------------------------------------------------

AUDIO_TOKENS_PER_SECOND = 10
"""Input audio: 1 token per 100 ms (OpenAI's realtime pricing: $100 per 1M audio input tokens,
"about $0.06 per minute"). An estimate; the API reports audio tokens separately."""
_AUDIO_MARGIN = 6  # per audio part: recorded gpt-4o-audio-preview figures were 3-4 above the rate
_AUDIO_FALLBACK_BYTES_PER_SECOND = 4000  # 32 kbit/s when the header cannot be read: long side
PDF_TEXT_TOKENS_PER_PAGE = 800
"""Estimated text tokens per PDF page (the API sends each page's text and an image of it)."""
PDF_PAGE_PIXELS = (1224, 1584)  # a US-letter page at 144 dpi, priced as a high-detail image
_PDF_FALLBACK_BYTES_PER_PAGE = 30_000
_PDF_PAGE_RE = re.compile(rb"/Type\s*/Page(?![a-zA-Z])")


def _b64(data: str) -> bytes:
    if data.startswith("data:"):
        data = data.partition(",")[2]
    try:
        return base64.b64decode(data, validate=False)
    except (binascii.Error, ValueError):
        return b""


def _wav_seconds(raw: bytes) -> float | None:
    if len(raw) < 12 or raw[:4] != b"RIFF" or raw[8:12] != b"WAVE":
        return None
    i, byte_rate = 12, 0
    while i + 8 <= len(raw):
        chunk, size = raw[i : i + 4], struct.unpack("<I", raw[i + 4 : i + 8])[0]
        if chunk == b"fmt " and i + 20 <= len(raw):
            byte_rate = struct.unpack("<I", raw[i + 16 : i + 20])[0]
        elif chunk == b"data":
            if byte_rate <= 0:
                return None
            available = len(raw) - i - 8
            return float(min(size, available) if size else available) / byte_rate
        i += 8 + size + (size & 1)
    return None


_MP3_KBPS = {
    (3, 1): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),  # MPEG1 L3
    (3, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),  # MPEG1 L2
    (3, 3): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),  # MPEG1 L1
    (2, 1): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),  # MPEG2/2.5 L2, L3
    (2, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (2, 3): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
}


def _mp3_seconds(raw: bytes) -> float | None:
    """Duration from the first frame's bitrate (exact for constant bitrate files)."""
    i = 0
    if raw[:3] == b"ID3" and len(raw) >= 10:
        size = (raw[6] << 21) | (raw[7] << 14) | (raw[8] << 7) | raw[9]
        i = 10 + size
    end = min(len(raw) - 4, i + 64 * 1024)
    while i < end:
        if raw[i] == 0xFF and raw[i + 1] & 0xE0 == 0xE0:
            version = (raw[i + 1] >> 3) & 3  # 3 = MPEG1, 2 = MPEG2, 0 = MPEG2.5
            layer = (raw[i + 1] >> 1) & 3  # 1 = L3, 2 = L2, 3 = L1
            index = raw[i + 2] >> 4
            table = _MP3_KBPS.get((3 if version == 3 else 2, layer))
            if version != 1 and table is not None and 0 < index < 15:
                return (len(raw) - i) * 8 / (table[index] * 1000)
        i += 1
    return None


def audio_tokens(spec: Any) -> int:
    """Input audio (estimate): duration from the WAV or MP3 header at 10 tokens per second."""
    if not isinstance(spec, Mapping) or not isinstance(spec.get("data"), str):
        return 0
    raw = _b64(spec["data"])
    if not raw:
        return 0
    seconds = _wav_seconds(raw) if spec.get("format") != "mp3" else None
    if seconds is None:
        seconds = _mp3_seconds(raw)
    if seconds is None:
        seconds = len(raw) / _AUDIO_FALLBACK_BYTES_PER_SECOND
    return math.ceil(seconds * AUDIO_TOKENS_PER_SECOND) + _AUDIO_MARGIN


def pdf_pages(file_data: str) -> int:
    """Pages of a base64 PDF: ``/Type /Page`` objects, else one per 30 kB (estimate)."""
    raw = _b64(file_data)
    pages = len(_PDF_PAGE_RE.findall(raw))
    if pages:
        return pages
    return max(1, math.ceil(len(raw) / _PDF_FALLBACK_BYTES_PER_PAGE))


def file_tokens(spec: Any, rule: ImageRule) -> int:
    """PDF input (estimate): each page as its text and as a high-detail page image."""
    pages = 1
    if isinstance(spec, Mapping) and isinstance(spec.get("file_data"), str):
        pages = pdf_pages(spec["file_data"])
    return pages * (rule.tokens(*PDF_PAGE_PIXELS, "high") + PDF_TEXT_TOKENS_PER_PAGE)
