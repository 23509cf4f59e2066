"""Decoding a list response, and turning each item into a `VideoRecord` or saying precisely why
it cannot be one.

Pure functions, no I/O. msgspec decodes the envelope, keeping each item's bytes
(`msgspec.Raw`) to decode in `parse_items`; the stored text and content hash are the item as
msgspec writes it compactly, keys in the order received. What msgspec refuses (a lone
surrogate, NaN/Infinity, a number beyond a double) and NUL take the slow path: the stdlib
decoder, `clean` and sorted-key JSON, exactly as before msgspec. Unknown enum values and extra
keys pass through untouched; only values whose *type* is wrong (or an id/timestamp we cannot
key or order by) make an item malformed. Every string, in the columns and in `raw`, has
U+0000 and lone surrogates replaced by U+FFFD so the mirror is byte-for-byte the same on
every backend.

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
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec

MAX_ID_LEN = 255
MAX_TS = 253402300799  # 9999-12-31T23:59:59Z
MAX_DEPTH = 20  # nesting levels of one item; a video object has 2
MAX_ITEM_CHARS = 1_000_000  # one item as JSON text; a video object is ~600
MAX_TEXT_BYTES = 65_535  # UTF-8 bytes kept in a text column (the raw JSON keeps everything)
INT32 = 2**31
_TOO_DEEP = "[nested too deeply]"
_BAD_CHARS = re.compile("[\x00\ud800-\udfff]")
_Text = TypeVar("_Text", str, str | None)
_REMIX = "remixed_from_video_id"


class BadBody(ValueError):
    """A response body that is not the documented JSON shape; the message is one line."""


@dataclass(frozen=True, slots=True)
class ListBody:
    """A decoded list response. `items` are what `parse_items` takes: each item's received
    bytes as a `msgspec.Raw`, or its decoded value when the body needed the stdlib decoder."""

    items: list[Any]
    has_more: bool
    first_id: str | None
    last_id: str | None


class _Envelope(msgspec.Struct):
    data: list[msgspec.Raw]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None


_ENVELOPE = msgspec.json.Decoder(_Envelope)
_ITEM = msgspec.json.Decoder()
_ENCODE = msgspec.json.Encoder().encode
_REFUSED = (msgspec.MsgspecError, RecursionError, UnicodeDecodeError)


def decode_list(body: bytes) -> ListBody:
    """The envelope of a `GET /videos` body; `BadBody` unless it has the documented shape."""
    try:
        env = _ENVELOPE.decode(body)
        if not body.isascii():
            body.decode()  # msgspec does not check the UTF-8 inside a Raw
    except _REFUSED:  # the stdlib decoder accepts NaN and lone surrogates, or says what is wrong
        doc = _loads(body)
        problem = _envelope_problem(doc)
        if problem:
            raise BadBody(problem) from None
        return ListBody(doc["data"], doc["has_more"], doc.get("first_id"), doc.get("last_id"))
    return ListBody(env.data, env.has_more, env.first_id, env.last_id)


def decode_object(body: bytes) -> dict[str, Any]:
    """A `GET /videos/{id}` body, decoded; `BadBody` unless it is a JSON object."""
    try:
        doc = _ITEM.decode(body)
    except _REFUSED:
        doc = _loads(body)
    if not isinstance(doc, dict):
        raise BadBody("the body is not a JSON object")
    return doc


def _loads(body: bytes) -> Any:
    try:
        return json.loads(body)
    except RecursionError as exc:
        raise BadBody("the body is JSON nested too deeply to decode") from exc
    except ValueError as exc:
        raise BadBody("the body is not JSON") from exc


def _envelope_problem(doc: Any) -> str | None:
    """What is wrong with a list envelope, or None when it has the documented shape."""
    if not isinstance(doc, dict):
        return "the body is not a JSON object"
    if not isinstance(doc.get("data"), list):
        return "`data` is not a list"
    if not isinstance(doc.get("has_more"), bool):
        return "`has_more` is not a boolean"
    for key in ("first_id", "last_id"):
        if not isinstance(doc.get(key), str | None):
            return f"`{key}` is neither a string nor null"
    return None


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
    `raw_json` is the item as compact JSON, keys in the order received; an item that needed
    cleaning is stored as compact JSON with sorted keys instead.
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
    raw_json: str  # `raw` as JSON text (what `content_hash` digests; stored as is)
    listed_id: str  # the id as the provider gave it (a gateway's wrapped form of `id`)


_LITELLM = "video_bGl0ZWxs"  # "video_" + base64 of "litell…"


# The documented keys of a video object: an answer without one of them is partial, and the
# mirror keeps the value it has for what the answer left out (`diff.merged`).
DOCUMENTED = frozenset({
    "id", "object", "model", "status", "progress", "created_at", "completed_at", "expires_at",
    "prompt", "size", "seconds", "remixed_from_video_id", "error",
})  # fmt: skip


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
    """Validate one item (received bytes or a decoded value); `InvalidItem` if malformed."""
    return _record(*_received(item))


def _received(item: Any) -> tuple[Any, bool]:
    """The item decoded, and whether msgspec decoded it (then it holds no lone surrogate and
    no NaN or infinity)."""
    if not isinstance(item, msgspec.Raw | bytes):
        return item, False
    try:
        return _ITEM.decode(item), True
    except _REFUSED:
        pass
    try:
        return json.loads(bytes(item)), False
    except (ValueError, RecursionError) as exc:
        raise InvalidItem("item is not JSON") from exc


def _compact(value: dict[str, Any], by_msgspec: bool) -> bytes | None:
    """`value` as compact JSON, keys in the order received; None when it must be cleaned.

    A function of the value, not of the bytes received: a job hashes the same whether it
    came in a list page, alone from `GET /videos/{id}`, or in a page msgspec refused.
    """
    try:
        data = _ENCODE(value)
    except (TypeError, ValueError, RecursionError):  # a lone surrogate, a key not a string
        return None
    if b"\\u0000" in data:  # NUL, as JSON text writes it
        return None
    if not by_msgspec and _ITEM.decode(data) != value:  # NaN or infinity became null
        return None
    return data


def _record(raw: Any, by_msgspec: bool) -> VideoRecord:
    if not isinstance(raw, dict):
        raise InvalidItem(f"item is a {type(raw).__name__}, not an object")
    data = _compact(raw, by_msgspec)
    # (counting brackets runs in C; walking every item's values was not free)
    if (data is None or data.count(b"{") + data.count(b"[") > MAX_DEPTH) and depth(raw) > MAX_DEPTH:
        given = raw.get("id")
        usable = isinstance(given, str) and 0 < len(given) <= MAX_ID_LEN and given.isprintable()
        vid_or_none = clean_text(given) if usable and isinstance(given, str) else None
        raise InvalidItem(f"item is nested deeper than {MAX_DEPTH} levels", vid_or_none)
    if data is None:  # as before msgspec, so that these rows stay as they were
        raw = clean(raw)
        text = json.dumps(raw, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
        data = text.encode()
    else:
        text = data.decode()
    vid = raw.get("id")
    if not isinstance(vid, str) or not vid.strip():
        raise InvalidItem("item has no string id")
    if len(vid) > MAX_ID_LEN or not vid.isprintable():
        raise InvalidItem(f"item id is longer than {MAX_ID_LEN} or not printable")
    if vid.endswith(" "):
        raise InvalidItem("item id ends with a space")
    listed, vid = vid, unwrap_id(vid)
    if len(text) > MAX_ITEM_CHARS:
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
        hashlib.blake2b(data, digest_size=16).hexdigest(),
        text,
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
    """Parse the items of one page (`ListBody.items`, or decoded values). Of two items with one
    id the later is kept, in the place of the earlier, and the earlier is rejected as a
    duplicate. A rejected item is given decoded, for its error's payload."""
    records: list[VideoRecord] = []
    rejected: list[Rejected] = []
    index: dict[str, int] = {}
    for given in items:
        item = given
        try:
            item, by_msgspec = _received(given)
            rec = _record(item, by_msgspec)
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
