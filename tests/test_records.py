"""`parse_video`: what it accepts, what it turns into what, and the one-line reason it gives
for each kind of malformed item (the reason lands in `sync_errors.message`)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from ingester.records import (
    MAX_ID_LEN,
    BadBody,
    InvalidItem,
    decode_list,
    parse_items,
    parse_video,
)
from tests.fakes import job


def test_a_usual_item_becomes_its_columns() -> None:
    item = job(1, "failed", completed_at=1_760_000_100, error={"code": 7, "message": "bad"})
    rec = parse_video(item)
    assert (rec.id, rec.status, rec.progress) == (item["id"], "failed", item["progress"])
    assert rec.created_at == datetime.fromtimestamp(item["created_at"], UTC)
    assert rec.completed_at == datetime(2025, 10, 9, 8, 55, tzinfo=UTC)
    assert rec.expires_at is None
    assert (rec.error_code, rec.error_message) == ("7", "bad")  # a numeric code kept as text
    assert rec.raw == item and json.loads(rec.raw_json) == item
    assert rec.raw_json.startswith('{"id":"video_000001","object":')  # keys as received


@pytest.mark.parametrize(
    ("changes", "column", "expected"),
    [
        ({"progress": 50.0}, "progress", 50),
        ({"progress": None}, "progress", None),
        ({"seconds": 8}, "seconds", "8"),
        ({"seconds": 8.0}, "seconds", "8"),
        ({"seconds": 2.5}, "seconds", "2.5"),
        ({"created_at": 1_760_000_000.9}, "created_at", datetime(2025, 10, 9, 8, 53, 20, 0, UTC)),
        ({"model": 2}, "model", "2"),
        ({"status": "brand_new_status"}, "status", "brand_new_status"),
        ({"prompt": "nul\x00here"}, "prompt", "nul\ufffdhere"),
        ({"error": {}}, "error_code", None),
    ],
)  # fmt: skip
def test_values_are_coerced_as_documented(
    changes: dict[str, Any], column: str, expected: Any
) -> None:
    assert getattr(parse_video({**job(1), **changes}), column) == expected


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ([1, 2], "item is a list, not an object"),
        ({**job(1), "id": 5}, "item has no string id"),
        ({**job(1), "id": "  "}, "item has no string id"),
        ({**job(1), "id": "v" * (MAX_ID_LEN + 1)}, "item id is longer than 255 or not printable"),
        ({**job(1), "id": "video\n1"}, "item id is longer than 255 or not printable"),
        ({**job(1), "id": "video_1 "}, "item id ends with a space"),
        ({**job(1), "status": None}, "status is missing or not a string"),
        ({**job(1), "status": ""}, "status is missing or not a string"),
        ({k: v for k, v in job(1).items() if k != "created_at"}, "created_at is missing"),
        ({**job(1), "created_at": "2026-01-01"}, "created_at is str, not a unix timestamp"),
        ({**job(1), "created_at": True}, "created_at is bool, not a unix timestamp"),
        ({**job(1), "created_at": -1}, "created_at -1 is out of range"),
        # NaN is no JSON value: cleaning stores it as the text "nan", which is no timestamp
        ({**job(1), "completed_at": float("nan")}, "completed_at is str, not a unix timestamp"),
        ({**job(1), "expires_at": 10**12}, "expires_at 1000000000000 is out of range"),
        ({**job(1), "progress": "50"}, "progress is str, not an integer"),
        ({**job(1), "progress": True}, "progress is bool, not an integer"),
        ({**job(1), "progress": 0.5}, "progress is float, not an integer"),
        ({**job(1), "progress": 2**31}, "progress 2147483648 is out of range"),
        ({**job(1), "error": "boom"}, "error is str, not an object"),
        ({**job(1), "error": {"code": ["x"]}}, "error.code is list, not a string"),
        ({**job(1), "error": {"message": {"a": 1}}}, "error.message is dict, not a string"),
        ({**job(1), "prompt": ["a"]}, "prompt is list, not a string"),
        ({**job(1), "size": "x" * 300}, "size is longer than 255 characters"),
        (
            {**job(1), "remixed_from_video_id": {"a": 1}},
            "remixed_from_video_id is dict, not a string",
        ),
    ],
)
def test_a_malformed_item_says_why_in_one_line(item: Any, message: str) -> None:
    with pytest.raises(InvalidItem) as raised:
        parse_video(item)
    assert str(raised.value) == message
    has_id = not message.startswith("item")  # the id itself is what is wrong
    assert raised.value.video_id == (item["id"] if has_id else None)


def test_a_page_msgspec_refuses_stores_its_good_items_as_a_clean_page_does() -> None:
    good = job(1, prompt="café 🎬")
    bad = {"id": "n", "status": "queued", "created_at": 1, "x": float("nan"), "p": "a\ud800"}
    clean_page = decode_list(json.dumps({"data": [good], "has_more": False}).encode())
    hostile = decode_list(json.dumps({"data": [good, bad], "has_more": True}).encode())
    assert isinstance(clean_page.items[0], msgspec.Raw) and hostile.items[0] == good  # stdlib
    (a,), (b, n) = parse_items(clean_page.items).records, parse_items(hostile.items).records
    assert (a.raw_json, a.content_hash) == (b.raw_json, b.content_hash)  # no update, ever
    assert n.raw == {"id": "n", "status": "queued", "created_at": 1, "x": "nan", "p": "a\ufffd"}
    assert n.raw_json == '{"created_at":1,"id":"n","p":"a\ufffd","status":"queued","x":"nan"}'


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"[]", "the body is not a JSON object"),
        (b'{"data": {}, "has_more": true}', "`data` is not a list"),
        (b'{"data": [], "has_more": 1}', "`has_more` is not a boolean"),
        (b'{"data": [], "has_more": true, "last_id": 5}', "`last_id` is neither a string nor null"),
        (b'{"data": ["\xff"], "has_more": false}', "the body is not JSON"),
        (b"[" * 100_000, "the body is JSON nested too deeply to decode"),
    ],
)
def test_a_bad_envelope_says_what_is_wrong(body: bytes, problem: str) -> None:
    with pytest.raises(BadBody) as caught:
        decode_list(body)
    assert str(caught.value) == problem
