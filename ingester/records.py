"""Turning one raw list item into a `VideoRecord`, or saying precisely why it cannot be one.

Pure functions, no I/O. Unknown enum values and extra keys pass through untouched; only
values whose *type* is wrong (or an id/timestamp we cannot key or order by) make an item
malformed. Every string, in the columns and in `raw`, has U+0000 and lone surrogates
replaced by U+FFFD so the mirror is byte-for-byte the same on every backend.

Limits that keep one hostile item from failing its whole page on some backend: an item
nested deeper than MAX_DEPTH (MariaDB's JSON stops at 32 levels) or larger than
MAX_ITEM_CHARS (MariaDB's packet limit), an id ending in a space (MariaDB compares
`'x'` and `'x '` as equal) and a progress outside 32 bits are malformed; the text columns
`prompt`, `error_code`, `error_message` keep at most MAX_TEXT_BYTES of UTF-8 (MariaDB's
TEXT), while `raw` keeps the whole value.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from json import encoder as _json_encoder
from typing import Any, TypeVar

MAX_ID_LEN = 255
MAX_TS = 253402300799  # 9999-12-31T23:59:59Z
MAX_DEPTH = 20  # nesting levels of one item; a video object has 2
MAX_ITEM_CHARS = 1_000_000  # one item as JSON text; a video object is ~600
MAX_TEXT_BYTES = 65_535  # UTF-8 bytes kept in a text column (the raw JSON keeps everything)
INT32 = 2**31
_TOO_DEEP = "[nested too deeply]"
_BAD_CHARS = re.compile("[\x00\ud800-\udfff]")
_SCALARS = frozenset({str, int, bool, type(None)})
_FLAT = _SCALARS | {float, dict}
_STR = frozenset({str})
_Text = TypeVar("_Text", str, str | None)
_REMIX = "remixed_from_video_id"


class InvalidItem(ValueError):
    """A list item that cannot be stored; `video_id` is set when the item had a usable id."""

    def __init__(self, message: str, video_id: str | None = None) -> None:
        super().__init__(message)
        self.video_id = video_id


@dataclass(slots=True)
class VideoRecord:
    """One validated video job, ready for the store. Never modified once made.

    (Not `frozen`: a frozen dataclass sets each of its 16 fields through
    `object.__setattr__`, which tripled the cost of making one, for every job of a backfill.)
    `raw` may be the very dict the item was decoded into, when it needed no cleaning.
    """

    id: str
    status: str
    progress: int | None
    created_at: datetime
    completed_at: datetime | None
    expires_at: datetime | None
    model: str | None
    prompt: str | None
    size: str | None
    seconds: str | None
    remixed_from_video_id: str | None
    error_code: str | None
    error_message: str | None
    raw: dict[str, Any]
    content_hash: str
    raw_json: str  # `raw` as canonical JSON text (what `content_hash` digests; stored as is)
    listed_id: str  # the id as the provider gave it (a gateway's wrapped form of `id`)


_LITELLM = "video_bGl0ZWxs"  # "video_" + base64 of "litell…"


def unwrap_id(video_id: str) -> str:
    """The upstream id of a LiteLLM-wrapped id; any other id as it is.

    LiteLLM lists `video_` + base64(`litellm:custom_llm_provider:…;model_id:…;video_id:<id>`),
    and the model part differs between its list and by-id answers: the mirror keys a job by
    the upstream id, so a source switched between a provider and its gateway keeps one row.
    """
    if not video_id.startswith(_LITELLM):
        return video_id
    try:
        text = base64.b64decode(video_id[6:], validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return video_id
    _, found, upstream = text.rpartition(";video_id:")  # the model may hold ";"
    return upstream if found and upstream and text.startswith("litellm:") else video_id


def clean_text(value: str) -> str:
    """`value` with NUL and lone surrogates replaced by U+FFFD."""
    if value.isascii():
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    return _BAD_CHARS.sub("\ufffd", value)


def clean(value: Any, _level: int = 0) -> Any:
    """A JSON value with every string (keys included) passed through `clean_text`.

    Containers deeper than MAX_DEPTH become a marker string, so this never recurses deeply.
    """
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict | list) and _level >= MAX_DEPTH:
        return _TOO_DEEP
    if isinstance(value, dict):
        return {clean_text(str(k)): clean(v, _level + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [clean(v, _level + 1) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # NaN/Infinity: no SQL JSON type stores them
    return value


def content_hash(raw: dict[str, Any]) -> str:
    """A stable 128-bit digest of the object, to tell changed rows from unchanged ones."""
    return _digest(_canonical(raw))


_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
# The C encoder `json.dumps` builds anew on every call, built once: a third of the cost of
# encoding one item. No circular check (markers=None): a decoded JSON value has no cycles, and
# `clean` makes none. Falls back to the encoder object where there is no C accelerator.
_C_ENCODE: Callable[[Any, int], Iterable[str]] | None = None
_make_c_encoder = getattr(_json_encoder, "c_make_encoder", None)
if _make_c_encoder is not None:
    # markers, default, encoder, indent, key and item separators, sort_keys, skipkeys, allow_nan
    _C_ENCODE = _make_c_encoder(
        None, _ENCODER.default, _json_encoder.encode_basestring, None, ":", ",", True, False, True
    )


def _canonical(raw: dict[str, Any]) -> str:
    """`raw` as compact JSON with sorted keys, exactly as `json.dumps` with those options."""
    if _C_ENCODE is None:
        return _ENCODER.encode(raw)
    return "".join(_C_ENCODE(raw, 0))


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def depth(value: Any, limit: int = MAX_DEPTH) -> int:
    """Nesting levels of a JSON value (a scalar 0, `[]` 1), counted without recursion.

    Stops counting once past `limit`.
    """
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        if not isinstance(node, dict | list):
            continue
        children = node.values() if isinstance(node, dict) else node
        deepest = max(deepest, level)
        if deepest > limit:
            return deepest
        stack.extend((child, level + 1) for child in children)
    return deepest


def parse_video(item: Any) -> VideoRecord:
    """Validate one raw list item; raise `InvalidItem` with a one-line reason if malformed."""
    if not isinstance(item, dict):
        raise InvalidItem(f"item is a {type(item).__name__}, not an object")
    raw, canonical, digest = _cleaned(item)
    vid = raw.get("id")
    if not isinstance(vid, str) or not vid.strip():
        raise InvalidItem("item has no string id")
    if len(vid) > MAX_ID_LEN or not vid.isprintable():
        raise InvalidItem(f"item id is longer than {MAX_ID_LEN} or not printable")
    if vid.endswith(" "):
        raise InvalidItem("item id ends with a space")
    listed, vid = vid, unwrap_id(vid)
    if len(canonical) > MAX_ITEM_CHARS:
        raise InvalidItem(f"item is larger than {MAX_ITEM_CHARS} characters of JSON", vid)
    status = raw.get("status")
    if not isinstance(status, str) or not status:
        raise InvalidItem("status is missing or not a string", vid)
    created = _when(raw, "created_at", vid)
    if created is None:
        raise InvalidItem("created_at is missing", vid)
    progress = raw.get("progress")
    if progress is not None and type(progress) is not int:
        if isinstance(progress, float) and progress.is_integer():
            progress = int(progress)
        elif isinstance(progress, bool) or not isinstance(progress, int):
            raise InvalidItem(f"progress is {type(progress).__name__}, not an integer", vid)
    if progress is not None and not -INT32 <= progress < INT32:
        raise InvalidItem(f"progress {progress} is out of range", vid)
    seconds = raw.get("seconds")
    if isinstance(seconds, int | float) and not isinstance(seconds, bool):
        seconds = str(int(seconds)) if float(seconds).is_integer() else str(seconds)
    error = raw.get("error")
    if error is not None and not isinstance(error, dict):
        raise InvalidItem(f"error is {type(error).__name__}, not an object", vid)
    return VideoRecord(
        vid,
        _short(status, vid, "status"),
        progress,
        created,
        _when(raw, "completed_at", vid),
        _when(raw, "expires_at", vid),
        _short(_text(raw.get("model"), vid, "model"), vid, "model"),
        _fit(_text(raw.get("prompt"), vid, "prompt")),
        _short(_text(raw.get("size"), vid, "size"), vid, "size"),
        _short(_text(seconds, vid, "seconds"), vid, "seconds"),
        _unwrap(_short(_text(raw.get(_REMIX), vid, _REMIX), vid, _REMIX)),
        _fit(_text(error.get("code"), vid, "error.code")) if error else None,
        _fit(_text(error.get("message"), vid, "error.message")) if error else None,
        raw,
        digest,
        canonical,
        listed,
    )


@dataclass(frozen=True, slots=True)
class Rejected:
    """An item of a page that is not stored, and the one-line reason (with its id if usable)."""

    item: Any
    message: str
    video_id: str | None


@dataclass(frozen=True, slots=True)
class ParsedPage:
    """The items of one page: valid records in list order, one per id, and the rest."""

    records: tuple[VideoRecord, ...]
    rejected: tuple[Rejected, ...]  # in list order


def parse_items(items: Iterable[Any]) -> ParsedPage:
    """Parse the items of one page. Of two items with one id the later is kept, in the place
    of the earlier, and the earlier is rejected as a duplicate."""
    records: list[VideoRecord] = []
    rejected: list[Rejected] = []
    index: dict[str, int] = {}
    for item in items:
        try:
            rec = parse_video(item)
        except InvalidItem as exc:
            rejected.append(Rejected(item, f"malformed item: {exc}", exc.video_id))
            continue
        at = index.get(rec.id)
        if at is not None:
            message = "duplicate id in one page; the later copy is kept"
            rejected.append(Rejected(item, message, rec.id))
            records[at] = rec
            continue
        index[rec.id] = len(records)
        records.append(rec)
    return ParsedPage(tuple(records), tuple(rejected))


def _cleaned(item: dict[str, Any]) -> tuple[dict[str, Any], str, str]:
    """`clean(item)`, its canonical JSON text and digest; `InvalidItem` if nested too deeply.

    The usual item (scalars, and objects of scalars) that has nothing to clean is returned as
    it is: walking it value by value was the costliest part of a backfill's parsing.
    """
    if _flat(item):
        canonical = _canonical(item)
        try:
            data = canonical.encode()  # a lone surrogate does not encode: clean it
        except UnicodeEncodeError:
            data = b"\\u0000"
        if b"\\u0000" not in data:  # NUL, as JSON text writes it
            return item, canonical, hashlib.blake2b(data, digest_size=16).hexdigest()
    if depth(item) > MAX_DEPTH:
        given = item.get("id")
        usable = isinstance(given, str) and 0 < len(given) <= MAX_ID_LEN and given.isprintable()
        vid_or_none = clean_text(given) if usable and isinstance(given, str) else None
        raise InvalidItem(f"item is nested deeper than {MAX_DEPTH} levels", vid_or_none)
    raw = clean(item)
    canonical = _canonical(raw)
    return raw, canonical, _digest(canonical)


def _flat(item: dict[Any, Any]) -> bool:
    """True for string keys and finite scalar values, or objects of them, one level deep."""
    if not _STR.issuperset(map(type, item)):
        return False
    kinds = set(map(type, item.values()))
    if kinds <= _SCALARS:
        return True  # (checking types as a set runs in C: this is every item of a backfill)
    if not kinds <= _FLAT:
        return False
    for value in item.values():
        kind = type(value)
        if kind is float and not math.isfinite(value):
            return False
        if kind is dict and not (
            _STR.issuperset(map(type, value))
            and all(type(v) in _SCALARS or _finite(v) for v in value.values())
        ):
            return False
    return True


def _finite(value: Any) -> bool:
    return type(value) is float and math.isfinite(value)


def _when(raw: dict[str, Any], key: str, vid: str) -> datetime | None:
    """The unix timestamp at `key` as an aware UTC datetime; None when absent."""
    value = raw.get(key)
    if value is None:
        return None
    if type(value) is not int:  # (the usual case first: every job has three)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidItem(f"{key} is {type(value).__name__}, not a unix timestamp", vid)
        if value != value:
            raise InvalidItem(f"{key} {value!r} is out of range", vid)
    if not 0 <= value <= MAX_TS:
        raise InvalidItem(f"{key} {value!r} is out of range", vid)
    return datetime.fromtimestamp(int(value), UTC)


def _text(value: Any, vid: str, label: str) -> str | None:
    if value is None or type(value) is str:
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)  # e.g. an error code sent as a number: keep it, as text
    raise InvalidItem(f"{label} is {type(value).__name__}, not a string", vid)


def _unwrap(value: str | None) -> str | None:
    return None if value is None else unwrap_id(value)


def _fit(value: str | None) -> str | None:
    """A text column's value cut to MAX_TEXT_BYTES of UTF-8 (at a character boundary)."""
    if value is None or len(value) <= MAX_TEXT_BYTES // 4:
        return value
    data = value.encode("utf-8")
    return value if len(data) <= MAX_TEXT_BYTES else data[:MAX_TEXT_BYTES].decode("utf-8", "ignore")


def _short(value: _Text, vid: str, key: str) -> _Text:
    if value is not None and len(value) > MAX_ID_LEN:
        raise InvalidItem(f"{key} is longer than {MAX_ID_LEN} characters", vid)
    return value
