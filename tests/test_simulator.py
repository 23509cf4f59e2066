"""The simulator over real HTTP on loopback: list semantics, auth, lifecycle, faults, log."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import pytest
import requests

from ingester.simulator import (
    ERRORS,
    FakeClock,
    Fault,
    Simulator,
    World,
    litellm_unwrap,
    litellm_wrap,
)

KEY = "sk-sim-SECRET-4242"
T0 = 1_760_000_000.0
FIELDS = {
    "id", "object", "model", "status", "progress", "created_at", "completed_at", "expires_at",
    "prompt", "size", "seconds", "remixed_from_video_id", "error",
}  # fmt: skip

Serve = Callable[..., Simulator]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Start simulators (stopped at teardown): serve(world, **options)."""
    started: list[Simulator] = []

    def start(world: World, **options: Any) -> Simulator:
        options.setdefault("api_key", KEY)
        sim = Simulator(world, **options).start()
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.stop()


@pytest.fixture
def http() -> Iterator[requests.Session]:
    session = requests.Session()
    session.trust_env = False  # never route loopback through a proxy from the environment
    session.headers["Authorization"] = f"Bearer {KEY}"
    yield session
    session.close()


def get(http: requests.Session, sim: Simulator, path: str, **params: Any) -> requests.Response:
    return http.get(sim.base_url + path, params=params, timeout=5)


def walk(http: requests.Session, sim: Simulator, order: str, limit: int) -> list[dict[str, Any]]:
    """Page the list the way the reference client does; every item seen, in order."""
    items: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": limit, "order": order}
    while True:
        r = get(http, sim, "/videos", **params)
        assert r.status_code == 200, r.text
        page = r.json()
        items += page["data"]
        if not page["has_more"] or not page["data"] or page["last_id"] is None:
            return items
        params["after"] = page["last_id"]


def tied_world(clock: FakeClock) -> World:
    """Terminal jobs, four created per second (ties), plus a batch still running."""
    world = World(clock=clock, seed=3)
    world.add_jobs(203, created_at=T0 - 3600, spacing_s=0.25, status="completed")
    world.add_jobs(20, created_at=T0 - 10, spacing_s=0.0, render_s=(50, 60), fail_rate=0.5)
    return world


# --- the list --------------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_walk_visits_every_job_once_in_created_order(
    serve: Serve, http: requests.Session, clock: FakeClock, order: str
) -> None:
    world = tied_world(clock)
    sim = serve(world)
    seen = walk(http, sim, order, limit=7)
    truth = world.truth()
    expected = [j["id"] for j in (truth if order == "asc" else truth[::-1])]
    assert [j["id"] for j in seen] == expected
    assert len(set(expected)) == len(truth) == 223
    stamps = [j["created_at"] for j in seen]
    assert stamps == sorted(stamps, reverse=order == "desc")
    assert sim.request_count == -(-223 // 7)


def test_ties_within_a_second_are_not_in_id_order(clock: FakeClock) -> None:
    truth = tied_world(clock).truth()
    pairs = list(itertools.pairwise(truth))
    ties = [(a["id"], b["id"]) for a, b in pairs if a["created_at"] == b["created_at"]]
    assert len(ties) > 100
    assert any(a > b for a, b in ties) and any(a < b for a, b in ties)


def test_page_envelope_has_more_first_and_last_id(
    serve: Serve, http: requests.Session, clock: FakeClock
) -> None:
    world = World(clock=clock)
    ids = world.add_jobs(10, created_at=T0 - 100, status="completed")
    sim = serve(world)
    first = get(http, sim, "/videos", limit=5, order="asc").json()
    assert set(first) == {"object", "data", "first_id", "last_id", "has_more"}
    assert first["object"] == "list"
    assert [j["id"] for j in first["data"]] == ids[:5]
    assert (first["first_id"], first["last_id"], first["has_more"]) == (ids[0], ids[4], True)
    second = get(http, sim, "/videos", limit=5, order="asc", after=ids[4]).json()
    assert [j["id"] for j in second["data"]] == ids[5:]
    assert second["has_more"] is False  # exactly full: nothing follows
    end = get(http, sim, "/videos", limit=5, order="asc", after=ids[9]).json()
    assert end == {"object": "list", "data": [], "first_id": None, "last_id": None,
                   "has_more": False}  # fmt: skip
    desc = get(http, sim, "/videos", limit=3, order="desc", after=ids[5]).json()
    assert [j["id"] for j in desc["data"]] == [ids[4], ids[3], ids[2]]
    assert desc["has_more"] is True


def test_video_objects_have_exactly_the_13_fields(
    serve: Serve, http: requests.Session, clock: FakeClock
) -> None:
    world = tied_world(clock)
    (remix,) = world.add_jobs(1, remix_of="video_parent", seconds="12", size="720x1280")
    sim = serve(world)
    for job in get(http, sim, "/videos", limit=100, order="desc").json()["data"]:
        assert set(job) == FIELDS
        assert job["object"] == "video"
    obj = get(http, sim, f"/videos/{remix}").json()
    assert (obj["remixed_from_video_id"], obj["seconds"], obj["size"]) == (
        "video_parent", "12", "720x1280"
    )  # fmt: skip


def test_out_of_order_additions_are_listed_by_created_at(
    serve: Serve, http: requests.Session, clock: FakeClock
) -> None:
    world = World(clock=clock)
    new = world.add_jobs(3, created_at=T0 - 10, status="completed")
    old = world.add_jobs(3, created_at=T0 - 1000, status="failed")
    sim = serve(world)
    assert [j["id"] for j in walk(http, sim, "asc", 2)] == old + new
    page = get(http, sim, "/videos", limit=2, order="asc", after=old[2]).json()
    assert [j["id"] for j in page["data"]] == new[:2]


@pytest.mark.parametrize(("mode", "status"), [("404", 404), ("400", 400)])
def test_unknown_after_is_an_error(
    serve: Serve, http: requests.Session, clock: FakeClock, mode: str, status: int
) -> None:
    world = World(clock=clock)
    ids = world.add_jobs(5, created_at=T0 - 100, status="completed")
    sim = serve(world, unknown_after=mode)
    world.delete(ids[2])
    for after in ("video_nope", ids[2], "video_" + "0" * 24, ""):
        r = get(http, sim, "/videos", limit=2, order="asc", after=after)
        assert r.status_code == status
        assert r.json()["error"]["param"] == "after"
        assert r.headers["Content-Type"] == "application/json"


def test_unknown_after_restart_serves_from_the_start(
    serve: Serve, http: requests.Session, clock: FakeClock
) -> None:
    world = World(clock=clock)
    ids = world.add_jobs(5, created_at=T0 - 100, status="completed")
    sim = serve(world, unknown_after="restart")
    page = get(http, sim, "/videos", limit=2, order="asc", after="video_gone").json()
    assert [j["id"] for j in page["data"]] == ids[:2]


@pytest.mark.parametrize(("name", "value"), [("limit", 0), ("limit", 101), ("limit", "ten"),
                                             ("order", "sideways")])  # fmt: skip
def test_invalid_limit_or_order_is_400(
    serve: Serve, http: requests.Session, clock: FakeClock, name: str, value: Any
) -> None:
    world = World(clock=clock)
    world.add_jobs(3, created_at=T0 - 100, status="completed")
    sim = serve(world)
    params: dict[str, Any] = {"limit": 10, "order": "asc", name: value}
    r = get(http, sim, "/videos", **params)
    assert r.status_code == 400
    error = r.json()["error"]
    assert (error["param"], error["type"]) == (name, "invalid_request_error")


def test_clamp_mode_clamps_limit(serve: Serve, http: requests.Session, clock: FakeClock) -> None:
    world = World(clock=clock)
    world.add_jobs(150, created_at=T0 - 1000, status="completed")
    sim = serve(world, clamp_limit=True)
    assert len(get(http, sim, "/videos", limit=1000, order="asc").json()["data"]) == 100
    assert len(get(http, sim, "/videos", limit=0, order="asc").json()["data"]) == 1
    assert get(http, sim, "/videos", limit="x", order="asc").status_code == 400


def test_defaults_when_limit_and_order_are_absent(
    serve: Serve, http: requests.Session, clock: FakeClock
) -> None:
    world = World(clock=clock)
    ids = world.add_jobs(30, created_at=T0 - 1000, status="completed")
    gateway = get(http, serve(world), "/videos").json()
    assert [j["id"] for j in gateway["data"]] == ids[::-1][:20]
    other = get(http, serve(world, default_limit=4, default_order="asc"), "/videos").json()
    assert [j["id"] for j in other["data"]] == ids[:4]


def test_get_by_id_and_404(serve: Serve, http: requests.Session, clock: FakeClock) -> None:
    world = tied_world(clock)
    sim = serve(world)
    some = world.truth()[150]
    assert get(http, sim, f"/videos/{some['id']}").json() == some
    r = get(http, sim, "/videos/video_missing")
    assert r.status_code == 404
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert get(http, sim, "/nothing").status_code == 404


def test_delete_removes_from_list_and_get(
    serve: Serve, http: requests.Session, clock: FakeClock
) -> None:
    world = World(clock=clock, seed=9)
    ids = world.add_jobs(1000, created_at=T0 - 5000, spacing_s=0.5, status="completed")
    sim = serve(world)
    assert world.delete(ids[500])  # one tombstone: skipped, not compacted away
    assert [j["id"] for j in walk(http, sim, "asc", 100)] == ids[:500] + ids[501:]
    page = get(http, sim, "/videos", limit=2, order="desc", after=ids[501]).json()
    assert [j["id"] for j in page["data"]] == [ids[499], ids[498]]
    gone = {ids[500]} | set(ids[100:400]) | set(ids[::7])  # enough to force a compaction
    for vid in gone - {ids[500]}:
        assert world.delete(vid)
    assert not world.delete(ids[100])
    assert len(world) == 1000 - len(gone)
    survivors = [i for i in ids if i not in gone]
    assert [j["id"] for j in walk(http, sim, "asc", 100)] == survivors
    assert [j["id"] for j in walk(http, sim, "desc", 33)] == survivors[::-1]
    assert get(http, sim, f"/videos/{ids[150]}").status_code == 404
    new = world.add_jobs(5, created_at=T0, status="completed")  # appended after a reindex
    assert [j["id"] for j in walk(http, sim, "asc", 3)] == survivors + new
    r = http.delete(f"{sim.base_url}/videos/{ids[1]}", timeout=5)
    assert r.json() == {"id": ids[1], "object": "video.deleted", "deleted": True}
    assert world.get(ids[1]) is None


def test_list_window_lists_only_recent_jobs(
    serve: Serve, http: requests.Session, clock: FakeClock
) -> None:
    world = World(clock=clock, list_window_s=86_400)
    old = world.add_jobs(5, created_at=T0 - 3 * 86_400, status="completed")
    new = world.add_jobs(5, created_at=T0 - 3600, status="completed")
    sim = serve(world)
    assert [j["id"] for j in walk(http, sim, "asc", 2)] == new
    assert [j["id"] for j in walk(http, sim, "desc", 2)] == new[::-1]
    assert get(http, sim, f"/videos/{old[0]}").json()["id"] == old[0]
    clock.advance(86_400)  # the window moves past everything
    assert get(http, sim, "/videos", limit=10, order="asc").json()["data"] == []


# --- lifecycle -------------------------------------------------------------------------------


def test_lifecycle_follows_the_injected_clock(
    serve: Serve, http: requests.Session, clock: FakeClock
) -> None:
    world = World(clock=clock)
    (ok,) = world.add_jobs(1, queued_s=(10, 10), render_s=(100, 100), fail_rate=0.0)
    (bad,) = world.add_jobs(1, queued_s=(10, 10), render_s=(100, 100), fail_rate=1.0)
    sim = serve(world)

    def job(vid: str) -> dict[str, Any]:
        return dict(get(http, sim, f"/videos/{vid}").json())

    first = job(ok)
    assert (first["status"], first["progress"], first["created_at"]) == ("queued", 0, int(T0))
    assert first["completed_at"] is None and first["expires_at"] is None
    clock.advance(35)
    assert (job(ok)["status"], job(ok)["progress"]) == ("in_progress", 25)
    clock.advance(50)
    assert job(ok)["progress"] == 75
    assert job(bad)["status"] == "in_progress"
    clock.advance(26)
    done = job(ok)
    assert (done["status"], done["progress"], done["error"]) == ("completed", 100, None)
    assert done["completed_at"] == int(T0) + 110
    assert done["expires_at"] == done["completed_at"] + 86_400
    failed = job(bad)
    assert failed["status"] == "failed"
    assert failed["error"]["code"] in {code for code, _ in ERRORS}
    assert failed["completed_at"] == int(T0) + 110 and failed["expires_at"] is None
    assert 0 <= failed["progress"] < 100
    clock.set(T0)  # back in time: the cached terminal bytes must not be served
    assert job(ok)["status"] == "queued"


def test_set_status_and_raw_objects_are_served_as_stored(
    serve: Serve, http: requests.Session, clock: FakeClock
) -> None:
    world = World(clock=clock)
    (a, b) = world.add_jobs(2, created_at=T0 - 100, status="completed")
    world.set_status(a, "processing", prompt="nul\x00here", extra_key=[1])
    key = world.add_raw({"object": "video", "status": 7}, created_at=T0 - 50)
    odd = world.add_raw({"id": 123, "size": None}, created_at=T0 - 40)
    sim = serve(world)
    page = get(http, sim, "/videos", limit=10, order="asc").json()
    assert page["data"][0]["status"] == "processing"
    assert page["data"][0]["prompt"] == "nul\x00here" and page["data"][0]["extra_key"] == [1]
    assert page["data"][2:] == [{"object": "video", "status": 7}, {"id": 123, "size": None}]
    assert page["last_id"] == 123  # the item's id, as stored
    assert key.startswith("raw#") and odd.startswith("raw#")
    assert get(http, sim, f"/videos/{key}").status_code == 404  # internal keys are not ids
    assert world.delete(key)
    assert len(get(http, sim, "/videos", limit=10, order="asc").json()["data"]) == 3
    with pytest.raises(KeyError):
        world.set_status("video_nope", "completed")
    assert world.get(b)["status"] == "completed"


# --- gateway profiles ------------------------------------------------------------------------

# '~' and '?' sit where base64 makes '+' and '/' of them, and the length leaves '=' padding.
ODD_MODEL = "veo~3.?"
NO_PROVIDER = {
    "error": {
        "message": "LLM Provider NOT provided",
        "type": "invalid_request_error",
        "param": None,
        "code": "400",
    }
}


@pytest.fixture
def llm(http: requests.Session) -> requests.Session:
    """The http session, sending the header LiteLLM needs to route to OpenAI."""
    http.headers["custom-llm-provider"] = "openai"
    return http


def raw_ids(page: dict[str, Any]) -> list[str | None]:
    return [litellm_unwrap(j["id"]) for j in page["data"]]


def test_litellm_needs_the_provider_header_or_query_parameter(
    serve: Serve, http: requests.Session, clock: FakeClock
) -> None:
    world = World(clock=clock)
    (vid,) = world.add_jobs(1, created_at=T0 - 100, status="completed")
    sim = serve(world, profile="litellm")
    assert sim.base_url.endswith("/v1")
    for path in ("/videos", f"/videos/{vid}"):
        r = get(http, sim, path)
        assert (r.status_code, r.json()) == (400, NO_PROVIDER)
    assert get(http, sim, "/videos", custom_llm_provider="azure").status_code == 400
    by_query = get(http, sim, "/videos", custom_llm_provider="openai")
    assert by_query.status_code == 200
    http.headers["custom-llm-provider"] = "openai"
    by_header = get(http, sim, "/videos")
    assert by_header.json() == by_query.json()
    assert raw_ids(by_header.json()) == [vid]
    assert get(http, sim, f"/videos/{vid}").status_code == 200
    del http.headers["Authorization"]
    assert get(http, sim, "/videos").status_code == 401  # auth comes first
    # No x-request-id: a LiteLLM call id instead, and that is what the log keeps.
    assert "x-request-id" not in by_header.headers
    call_id = by_header.headers["x-litellm-call-id"]
    assert str(uuid.UUID(call_id)) == call_id
    assert call_id in [r.request_id for r in sim.requests]


def test_litellm_ignores_limit_order_and_after(
    serve: Serve, llm: requests.Session, clock: FakeClock
) -> None:
    world = World(clock=clock)
    ids = world.add_jobs(30, created_at=T0 - 1000, status="completed", model=ODD_MODEL)
    sim = serve(world, profile="litellm")
    newest = ids[::-1][:20]
    for after in (ids[3], "bogus", litellm_wrap(ids[3], ODD_MODEL)):
        page = get(llm, sim, "/videos", order="asc", after=after, limit=5).json()
        assert raw_ids(page) == newest
        assert page["has_more"] is True
        assert (page["first_id"], page["last_id"]) == (
            page["data"][0]["id"],
            page["data"][-1]["id"],
        )
    assert sim.requests[0].query == {"order": "asc", "after": ids[3], "limit": "5"}
    few = World(clock=clock)
    few_ids = few.add_jobs(20, created_at=T0 - 1000, status="completed")
    page = get(llm, serve(few, profile="litellm"), "/videos", limit=100).json()
    assert raw_ids(page) == few_ids[::-1]
    assert page["has_more"] is False


def test_litellm_wrapped_ids_round_trip_and_by_id_replies(
    serve: Serve, llm: requests.Session, clock: FakeClock
) -> None:
    world = World(clock=clock, seed=4)
    ids = world.add_jobs(25, created_at=T0 - 1000, status="completed", model=ODD_MODEL)
    sim = serve(world, profile="litellm")
    page = get(llm, sim, "/videos").json()
    wrapped = [j["id"] for j in page["data"]]
    for raw, w in zip(ids[::-1], wrapped, strict=False):
        assert w == litellm_wrap(raw, ODD_MODEL)
        assert litellm_unwrap(w) == raw
    assert all(any(c in w for w in wrapped) for c in "+/=")  # all need percent-encoding
    truth = {j["id"]: j for j in world.truth()}
    for w in wrapped[:3]:
        r = get(llm, sim, "/videos/" + quote(w, safe=""))
        assert r.status_code == 200, r.text
        job = r.json()
        assert "prompt" not in job and job.pop("usage") is None
        expected = {k: v for k, v in truth[litellm_unwrap(w)].items() if k != "prompt"}
        assert job == {**expected, "id": w}
    raw = get(llm, sim, f"/videos/{ids[0]}").json()
    assert raw["id"] == litellm_wrap(ids[0], "")  # a raw id comes back wrapped, empty model_id
    assert "prompt" not in raw and raw["usage"] is None
    for unknown in ("video_nope", litellm_wrap("video_nope", ODD_MODEL)):
        r = get(llm, sim, "/videos/" + quote(unknown, safe=""))
        assert r.status_code == 404
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert litellm_unwrap(ids[0]) is None  # 24 hex digits are valid base64, but not a wrap
    assert litellm_unwrap("video_@@") is None
    assert litellm_unwrap("video_" + litellm_wrap("x", "m")[6:-4]) is None


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_litellm_paged_walks_with_wrapped_cursors(
    serve: Serve, llm: requests.Session, clock: FakeClock, order: str
) -> None:
    world = tied_world(clock)
    sim = serve(world, profile="litellm-paged")
    truth = world.truth()
    seen = walk(llm, sim, order, limit=7)
    expected = [j["id"] for j in (truth if order == "asc" else truth[::-1])]
    assert [litellm_unwrap(j["id"]) for j in seen] == expected
    afters = [r.query["after"] for r in sim.requests if "after" in r.query]
    assert afters and all(litellm_unwrap(a) is not None for a in afters)
    page = get(llm, sim, "/videos", limit=2, order=order, after=expected[4]).json()
    assert raw_ids(page) == expected[5:7]  # a raw cursor works too
    job = get(llm, sim, "/videos/" + quote(seen[9]["id"], safe="")).json()
    assert job == {**truth[9 if order == "asc" else -10], "id": seen[9]["id"]}  # whole
    by_raw = get(llm, sim, f"/videos/{expected[0]}").json()
    assert by_raw["id"] == litellm_wrap(expected[0], "sora-2")
    assert get(llm, sim, "/videos", limit=2, after="video_gone").status_code == 404


def test_litellm_paged_drops_jobs_of_other_owners_but_keeps_the_cursors(
    serve: Serve, llm: requests.Session, clock: FakeClock
) -> None:
    world = World(clock=clock)
    ids = world.add_jobs(50, created_at=T0 - 1000, status="completed")
    mine = set(ids[:5] + ids[40:])
    admin = serve(world, profile="litellm-paged")
    user = serve(world, profile="litellm-paged", visible=mine.__contains__)
    pages = []
    after: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 10, "order": "asc"}
        if after is not None:
            params["after"] = after
        full = get(llm, admin, "/videos", **params).json()
        seen = get(llm, user, "/videos", **params).json()
        for key in ("first_id", "last_id", "has_more"):
            assert seen[key] == full[key]
        assert seen["data"] == [j for j in full["data"] if litellm_unwrap(j["id"]) in mine]
        pages.append(seen)
        if not seen["has_more"]:
            break
        after = seen["last_id"]
    assert [len(p["data"]) for p in pages] == [5, 0, 0, 0, 10]
    assert all(p["has_more"] for p in pages[1:4])
    assert [i for p in pages for i in raw_ids(p)] == ids[:5] + ids[40:]


def test_window_profile_defaults_clamps_and_lists_one_day(
    serve: Serve, http: requests.Session, clock: FakeClock
) -> None:
    world = World(clock=clock)
    old = world.add_jobs(5, created_at=T0 - 3 * 86_400, status="completed")
    recent = world.add_jobs(120, created_at=T0 - 3600, spacing_s=10, status="completed")
    sim = serve(world, profile="window")
    assert sim.base_url.endswith("/v1")
    r = get(http, sim, "/videos")
    assert "x-request-id" in r.headers
    assert [j["id"] for j in r.json()["data"]] == recent[::-1][:20]
    clamped = get(http, sim, "/videos", limit=1000).json()
    assert [j["id"] for j in clamped["data"]] == recent[::-1][:100]
    for limit in (0, -5):
        assert len(get(http, sim, "/videos", limit=limit, order="asc").json()["data"]) == 1
    assert [j["id"] for j in walk(http, sim, "asc", 100)] == recent
    assert get(http, sim, f"/videos/{old[0]}").json()["id"] == old[0]
    assert [
        j["id"] for j in walk(http, serve(world), "asc", 100)
    ] == old + recent  # world: no window


def test_status_names_rename_the_lifecycle(
    serve: Serve, http: requests.Session, clock: FakeClock
) -> None:
    names = {"queued": "pending", "in_progress": "processing", "completed": "succeeded"}
    world = World(clock=clock, status_names=names)
    (ok,) = world.add_jobs(1, queued_s=(10, 10), render_s=(100, 100), fail_rate=0.0)
    (bad,) = world.add_jobs(1, queued_s=(10, 10), render_s=(100, 100), fail_rate=1.0)
    (gone,) = world.add_jobs(1, queued_s=(10, 10), render_s=(100, 100))
    world.set_status(gone, "cancelled")
    sim = serve(world)

    def statuses() -> list[str]:
        by_id = [get(http, sim, f"/videos/{v}").json()["status"] for v in (ok, bad, gone)]
        listed = [j["status"] for j in get(http, sim, "/videos", order="asc").json()["data"]]
        assert listed == by_id
        return by_id

    assert statuses() == ["pending", "pending", "cancelled"]
    clock.advance(50)
    assert statuses() == ["processing", "processing", "cancelled"]
    clock.advance(100)
    assert statuses() == ["succeeded", "failed", "cancelled"]
    assert statuses() == ["succeeded", "failed", "cancelled"]  # from the cache of terminal bytes


# --- auth, gone, log -------------------------------------------------------------------------


def test_openai_auth(serve: Serve, clock: FakeClock) -> None:
    sim = serve(World(clock=clock))
    url = sim.base_url + "/videos"
    assert sim.base_url == f"http://127.0.0.1:{sim.port}/v1"
    bodies = []
    for headers in ({}, {"Authorization": "Bearer nope"}, {"api-key": KEY},
                    {"Authorization": KEY}):  # fmt: skip
        r = requests.get(url, headers=headers, timeout=5)
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "invalid_api_key"
        bodies.append(r.text + str(r.headers))
    ok = requests.get(url, headers={"Authorization": f"Bearer {KEY}"}, timeout=5)
    assert ok.status_code == 200
    bodies.append(ok.text + str(ok.headers))
    assert all(KEY not in b for b in bodies)
    assert [r.auth for r in sim.requests] == ["missing", "wrong", "missing", "wrong", "ok"]
    assert KEY not in repr(sim.requests)


def test_azure_auth_and_prefix(serve: Serve, clock: FakeClock) -> None:
    sim = serve(World(clock=clock), profile="azure")
    assert sim.base_url.endswith("/openai/v1")
    url = sim.base_url + "/videos"
    assert (
        requests.get(url, headers={"Authorization": f"Bearer {KEY}"}, timeout=5).status_code == 401
    )
    assert requests.get(url, headers={"api-key": "wrong"}, timeout=5).status_code == 401
    assert requests.get(url, headers={"api-key": KEY}, timeout=5).status_code == 200
    assert (
        requests.get(url.replace("/openai", ""), headers={"api-key": KEY}, timeout=5).status_code
        == 404
    )


def test_no_key_means_no_auth(serve: Serve, clock: FakeClock) -> None:
    sim = serve(World(clock=clock), api_key=None)
    assert requests.get(sim.base_url + "/videos", timeout=5).status_code == 200


def test_gone_answers_everything_with_that_status(
    serve: Serve, http: requests.Session, clock: FakeClock
) -> None:
    world = tied_world(clock)
    sim = serve(world, gone=410)
    some = world.truth()[0]["id"]
    for path in ("/videos", f"/videos/{some}"):
        r = get(http, sim, path, limit=10, order="asc")
        assert r.status_code == 410
        assert "error" in r.json()
    sim.gone = None
    assert get(http, sim, f"/videos/{some}").status_code == 200


def test_request_ids_are_unique_and_logged(
    serve: Serve, http: requests.Session, clock: FakeClock
) -> None:
    sim = serve(World(clock=clock))
    http.headers["OpenAI-Organization"] = "org-123"
    responses = [get(http, sim, "/videos", limit=5, order="asc") for _ in range(20)]
    responses.append(get(http, sim, "/videos/video_x"))
    rids = [r.headers["x-request-id"] for r in responses]
    assert len(set(rids)) == 21 and all(rid.startswith("req_") for rid in rids)
    log = sim.requests
    assert [r.request_id for r in log] == rids
    assert [r.status for r in log] == [200] * 20 + [404]
    assert log[0].query == {"limit": "5", "order": "asc"}
    assert log[0].headers["openai-organization"] == "org-123"
    assert log[-1].path == "/v1/videos/video_x"
    sim.reset_log()
    assert sim.request_count == 0


def test_rate_limit_headers_and_429(serve: Serve, http: requests.Session, clock: FakeClock) -> None:
    sim = serve(World(clock=clock), rate_limit=2)
    first = get(http, sim, "/videos", limit=5, order="asc")
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert first.headers["x-ratelimit-reset-requests"].endswith("s")
    get(http, sim, "/videos", limit=5, order="asc")
    third = get(http, sim, "/videos", limit=5, order="asc")
    assert third.status_code == 429
    assert 1 <= int(third.headers["Retry-After"]) <= 60


# --- faults ----------------------------------------------------------------------------------


def test_scripted_429_with_retry_headers_then_success(
    serve: Serve, http: requests.Session, clock: FakeClock
) -> None:
    sim = serve(World(clock=clock))
    sim.faults.push(Fault.rate_limited(retry_after=2, retry_after_ms=1500, should_retry=True))
    r = get(http, sim, "/videos", limit=5, order="asc")
    assert r.status_code == 429
    assert (r.headers["Retry-After"], r.headers["retry-after-ms"]) == ("2", "1500")
    assert r.headers["x-should-retry"] == "true"
    assert r.json()["error"]["code"] == "rate_limit_exceeded"
    assert r.headers["x-request-id"].startswith("req_")
    assert get(http, sim, "/videos", limit=5, order="asc").status_code == 200
    assert [rec.fault for rec in sim.requests] == ["status", None]


def test_fault_count_order_and_path_filter(
    serve: Serve, http: requests.Session, clock: FakeClock
) -> None:
    world = World(clock=clock)
    ids = world.add_jobs(3, created_at=T0 - 10, status="completed")
    sim = serve(world)
    sim.faults.push(Fault.unavailable(retry_after="Wed, 21 Oct 2026 07:28:00 GMT"), count=2,
                    path_contains="after=")  # fmt: skip
    sim.faults.push(Fault.bad_gateway())
    assert get(http, sim, "/videos", limit=1, order="asc").status_code == 502
    assert get(http, sim, "/videos", limit=1, order="asc").status_code == 200
    r = get(http, sim, "/videos", limit=1, order="asc", after=ids[0])
    assert (r.status_code, r.headers["Retry-After"]) == (503, "Wed, 21 Oct 2026 07:28:00 GMT")
    assert get(http, sim, "/videos", limit=1, order="asc", after=ids[0]).status_code == 503
    assert sim.faults.pending == 0
    assert get(http, sim, "/videos", limit=1, order="asc", after=ids[0]).status_code == 200


def test_reset_is_a_connection_error(
    serve: Serve, http: requests.Session, clock: FakeClock
) -> None:
    sim = serve(World(clock=clock))
    sim.faults.push(Fault.reset())
    with pytest.raises(requests.ConnectionError):
        get(http, sim, "/videos", limit=5, order="asc")
    assert get(http, sim, "/videos", limit=5, order="asc").status_code == 200
    assert [r.status for r in sim.requests] == [None, 200]


def test_truncated_body_fails_the_read(
    serve: Serve, http: requests.Session, clock: FakeClock
) -> None:
    world = tied_world(clock)
    sim = serve(world)
    sim.faults.push(Fault.truncated())
    with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.ConnectionError)):
        get(http, sim, "/videos", limit=100, order="asc")
    assert get(http, sim, "/videos", limit=100, order="asc").json()["has_more"] is True


def test_slow_and_stall_trip_the_read_timeout(
    serve: Serve, http: requests.Session, clock: FakeClock
) -> None:
    sim = serve(World(clock=clock))
    url = sim.base_url + "/videos?limit=1&order=asc"
    sim.faults.push(Fault.slow(0.15))
    t = time.monotonic()
    assert http.get(url, timeout=5).status_code == 200
    assert time.monotonic() - t >= 0.15
    sim.faults.push(Fault.slow(5.0))
    with pytest.raises(requests.exceptions.ReadTimeout):
        http.get(url, timeout=0.2)
    sim.faults.push(Fault.stall())
    with pytest.raises(requests.exceptions.ReadTimeout):
        http.get(url, timeout=0.2)
    t = time.monotonic()
    sim.stop()  # the stalled and slow handlers must not hold the stop up
    assert time.monotonic() - t < 1.0


def test_raw_body_fault_serves_bytes_verbatim(
    serve: Serve, http: requests.Session, clock: FakeClock
) -> None:
    sim = serve(World(clock=clock))
    sim.faults.push(Fault.raw(b"<html>Bad Gateway</html>", 502, "text/html"))
    hostile = b'{"object":"list","data":' + b"[" * 5000
    sim.faults.push(Fault.raw(hostile, 200))
    r = get(http, sim, "/videos", limit=5, order="asc")
    assert (r.status_code, r.headers["Content-Type"], r.content) == (
        502, "text/html", b"<html>Bad Gateway</html>"
    )  # fmt: skip
    assert "x-request-id" in r.headers
    r = get(http, sim, "/videos", limit=5, order="asc")
    assert (r.status_code, r.content) == (200, hostile)
    with pytest.raises(RecursionError):  # not a ValueError: decoders must catch this too
        r.json()


def test_random_faults_are_seeded(serve: Serve, http: requests.Session, clock: FakeClock) -> None:
    def statuses() -> list[int]:
        sim = serve(World(clock=clock))
        sim.faults.random(0.4, [Fault.server_error(), Fault.rate_limited(0)], seed=7)
        return [get(http, sim, "/videos", limit=1, order="asc").status_code for _ in range(40)]

    first = statuses()
    assert first == statuses()
    assert {200, 500, 429} == set(first)
    assert 6 <= first.count(200) <= 34


def test_stop_is_prompt_and_closes_idle_keep_alive_connections(
    serve: Serve, clock: FakeClock
) -> None:
    sim = serve(World(clock=clock), api_key=None)
    conns = [socket.create_connection(("127.0.0.1", sim.port), timeout=2) for _ in range(3)]
    for conn in conns:
        conn.sendall(b"GET /v1/videos HTTP/1.1\r\nHost: x\r\n\r\n")
        head = conn.recv(65536)
        assert head.startswith(b"HTTP/1.1 200 ") and b"Connection: close" not in head
    t = time.monotonic()
    sim.stop()
    assert time.monotonic() - t < 1.0
    for conn in conns:
        assert conn.recv(65536) == b""  # closed by the server, not left hanging
        conn.close()
    with pytest.raises(requests.ConnectionError):
        requests.get(sim.base_url + "/videos", timeout=1)


def test_standalone_serves_and_stops_on_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "ingester.simulator", "--port", "0", "--jobs", "50",
         "--api-key", KEY, "--new-every", "0"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        base_url = line.split()[1]
        r = requests.get(base_url + "/videos?limit=100&order=asc",
                         headers={"Authorization": f"Bearer {KEY}"}, timeout=5)  # fmt: skip
        assert len(r.json()["data"]) == 50
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        proc.kill()
        proc.wait()
