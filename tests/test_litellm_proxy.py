"""What the real LiteLLM proxy 1.110.2 does to `GET /videos` (DESIGN.md 1a), by raw requests.

The proxy runs once a session (conftest `litellm_proxy`) in front of a simulator whose defaults
are OpenAI's (20 a page, newest first); each test serves its own world behind it. The last
tests run the `ingester` console script through it (issue 11).
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
import sqlalchemy as sa

from ingester.database import make_engine
from ingester.models import sync_errors, video_job_transitions, video_jobs
from ingester.simulator import FakeClock, Fault, World
from tests.litellm_proxy import LiteLLMProxy, unwrap_id
from tests.proc import INGESTER, clean_env

NOW = 1_790_000_000.0


def _world() -> World:
    """250 jobs: 230 completed, 5 completed without a model, 5 failed, 10 still open."""
    world = World(clock=FakeClock(NOW), seed=7)  # frozen: open jobs stay open
    world.add_jobs(230, created_at=NOW - 1000, status="completed")
    world.add_jobs(5, created_at=NOW - 100, model=None, status="completed")
    world.add_jobs(5, created_at=NOW - 80, model="sora-2-pro", status="failed")
    world.add_jobs(10, created_at=NOW - 10, render_s=(600.0, 900.0))
    return world


@pytest.fixture
def proxy(litellm_proxy: LiteLLMProxy) -> LiteLLMProxy:
    """The proxy in front of `_world()`."""
    litellm_proxy.serve(_world())
    return litellm_proxy


def _get(proxy: LiteLLMProxy, path: str, **kw: Any) -> requests.Response:
    headers = kw.pop("headers", proxy.headers)
    return requests.get(proxy.base_url + path, headers=headers, timeout=30, **kw)


def _video(proxy: LiteLLMProxy, wrapped: str) -> requests.Response:
    return _get(proxy, "/videos/" + quote(wrapped, safe=""))


def test_the_list_is_the_upstreams_default_page_whatever_is_asked(proxy: LiteLLMProxy) -> None:
    truth = proxy.simulator.world.truth()
    newest = [job["id"] for job in reversed(truth[-20:])]
    first = _get(proxy, "/videos").json()
    asks: list[dict[str, Any]] = [
        {},
        {"limit": 100, "order": "asc"},
        {"limit": 5},
        {"order": "asc"},
        {"after": first["last_id"]},
        {"after": "video_bogus"},
        {"limit": 100, "order": "asc", "after": first["data"][-1]["id"]},
    ]
    for params in asks:
        resp = _get(proxy, "/videos", params=params)
        assert resp.status_code == 200, (params, resp.text)
        body = resp.json()
        assert [unwrap_id(job["id"])[1] for job in body["data"]] == newest, params
        assert body["has_more"] is True
    # none of limit, order, after reaches the upstream
    assert [r.query for r in proxy.simulator.requests] == [{}] * (len(asks) + 1)
    assert {r.path for r in proxy.simulator.requests} == {"/v1/videos"}


def test_the_page_size_is_the_upstreams_default(proxy: LiteLLMProxy) -> None:
    proxy.simulator.default_limit = 50
    body = _get(proxy, "/videos", params={"limit": 100}).json()
    assert len(body["data"]) == 50 and body["has_more"] is True


def test_list_ids_wrap_the_raw_id_and_the_jobs_model(proxy: LiteLLMProxy) -> None:
    truth = {job["id"]: job for job in proxy.simulator.world.truth()}
    body = _get(proxy, "/videos").json()
    models = set()
    for job in body["data"]:
        model_id, raw = unwrap_id(job["id"])
        # model_id is the job's `model`, "" when it is null; the rest of the job is untouched
        assert model_id == (job["model"] or "")
        assert {**job, "id": raw} == truth[raw]
        models.add(job["model"])
    assert models == {"sora-2", "sora-2-pro", None}
    assert body["first_id"] == body["data"][0]["id"]
    assert body["last_id"] == body["data"][-1]["id"]


def test_model_id_is_verbatim_so_ids_can_hold_slash_plus_and_equals(
    litellm_proxy: LiteLLMProxy,
) -> None:
    world = World(clock=FakeClock(NOW))
    world.add_raw({**_raw_job(), "id": "video_~~~~"}, created_at=NOW - 2)
    world.add_raw({**_raw_job(), "id": "video_0", "model": "sora-2?"}, created_at=NOW - 1)
    world.add_raw({**_raw_job(), "id": "video_1", "model": "a;b"}, created_at=NOW)
    sim = litellm_proxy.serve(world)
    semi, slash, plus = [job["id"] for job in _get(litellm_proxy, "/videos").json()["data"]]
    assert [unwrap_id(i) for i in (semi, slash, plus)] == [
        ("a;b", "video_1"),
        ("sora-2?", "video_0"),
        ("sora-2", "video_~~~~"),
    ]
    assert "/" in slash and "+" in plus and plus.endswith("==")
    sim.reset_log()
    # `+` and `=` read back, percent-encoded or not
    assert _video(litellm_proxy, plus).json()["id"] == plus
    assert _get(litellm_proxy, "/videos/" + plus).json()["id"] == plus
    # a `/` does not: the proxy's router answers 404 before any upstream request, encoded or not
    for path in (quote(slash, safe=""), slash):
        resp = _get(litellm_proxy, "/videos/" + path)
        assert (resp.status_code, resp.json()) == (404, {"detail": "Not Found"})
    # a `;` in the model splits the id wrongly: the proxy asks the upstream for another id
    resp = _video(litellm_proxy, semi)
    assert resp.status_code == 404 and "Video with id 'b' not found." in resp.text
    assert [r.path for r in sim.requests] == ["/v1/videos/video_~~~~"] * 2 + ["/v1/videos/b"]
    # the raw id reads every one of them
    for raw in ("video_1", "video_0", "video_~~~~"):
        assert unwrap_id(_get(litellm_proxy, "/videos/" + quote(raw)).json()["id"])[1] == raw


def _raw_job() -> dict[str, Any]:
    world = World(clock=FakeClock(NOW))
    world.add_jobs(1, created_at=NOW - 5, status="completed")
    job: dict[str, Any] = world.truth()[0]
    return job


def test_get_by_wrapped_id_answers_it_without_prompt_and_with_null_usage(
    proxy: LiteLLMProxy,
) -> None:
    truth = {job["id"]: job for job in proxy.simulator.world.truth()}
    for job in _get(proxy, "/videos").json()["data"][::6]:
        resp = _video(proxy, job["id"])
        assert resp.status_code == 200
        got = resp.json()
        raw = unwrap_id(job["id"])[1]
        assert got["id"] == job["id"]
        assert "prompt" not in got and got["usage"] is None
        expected = {k: v for k, v in truth[raw].items() if k != "prompt"}
        assert {**got, "id": raw} == {**expected, "usage": None}
    assert proxy.simulator.requests[-1].path == f"/v1/videos/{raw}"


def test_get_by_raw_id_answers_a_wrapped_id_with_an_empty_model_id(proxy: LiteLLMProxy) -> None:
    job = proxy.simulator.world.truth()[-1]
    assert job["model"] == "sora-2"
    resp = _get(proxy, "/videos/" + job["id"])
    assert resp.status_code == 200
    got = resp.json()
    assert unwrap_id(got["id"]) == ("", job["id"])
    assert got["id"] != _get(proxy, "/videos").json()["data"][0]["id"]  # not the list's id
    assert "prompt" not in got and got["status"] == job["status"]


def test_unknown_id_is_the_upstreams_404_inside_the_proxys_error(proxy: LiteLLMProxy) -> None:
    resp = _get(proxy, "/videos/video_doesnotexist")
    assert resp.status_code == 404
    error = resp.json()["error"]
    assert error["code"] == "404"
    assert "Video with id 'video_doesnotexist' not found." in error["message"]


def test_the_provider_must_be_named(proxy: LiteLLMProxy) -> None:
    auth = {"Authorization": proxy.headers["Authorization"]}
    resp = _get(proxy, "/videos", headers=auth)
    assert resp.status_code == 400
    assert "LLM Provider NOT provided" in resp.json()["error"]["message"]
    assert proxy.simulator.request_count == 0
    # the query parameter does as well as the header
    resp = _get(proxy, "/videos", headers=auth, params={"custom_llm_provider": "openai"})
    assert resp.status_code == 200 and len(resp.json()["data"]) == 20
    # what a SourceSettings for the proxy carries is enough
    source = proxy.source_settings()
    assert source.api_key is not None
    headers = {"Authorization": f"Bearer {source.api_key.reveal()}", **dict(source.extra_headers)}
    assert _get(proxy, "/videos", headers=headers).status_code == 200


def test_a_wrong_master_key_is_400_without_a_database(proxy: LiteLLMProxy) -> None:
    headers = {**proxy.headers, "Authorization": "Bearer sk-wrong"}
    resp = _get(proxy, "/videos", headers=headers)
    assert resp.status_code == 400
    assert resp.json()["error"]["message"] == "No connected db."
    assert proxy.simulator.request_count == 0


def test_few_jobs_end_the_list(litellm_proxy: LiteLLMProxy) -> None:
    world = World(clock=FakeClock(NOW))
    raws = world.add_jobs(7, created_at=NOW - 100, status="completed")
    litellm_proxy.serve(world)
    body = _get(litellm_proxy, "/videos").json()
    assert [unwrap_id(job["id"])[1] for job in body["data"]] == raws[::-1]
    assert body["has_more"] is False
    litellm_proxy.serve(World(clock=FakeClock(NOW)))
    empty = _get(litellm_proxy, "/videos").json()
    assert empty == {"object": "list", "data": [], "first_id": None, "last_id": None,
                     "has_more": False}  # fmt: skip


def test_a_call_id_names_each_request_never_x_request_id(proxy: LiteLLMProxy) -> None:
    calls = [_get(proxy, "/videos"), _get(proxy, "/videos")]
    ids = [resp.headers["x-litellm-call-id"] for resp in calls]
    assert len({str(uuid.UUID(i)) for i in ids}) == 2
    assert all("x-request-id" not in resp.headers for resp in calls)
    assert calls[0].headers["x-litellm-version"] == "1.110.2"


def test_upstream_errors_pass_through_once_with_renamed_headers(proxy: LiteLLMProxy) -> None:
    sim = proxy.simulator
    sim.faults.push(Fault.rate_limited(2))
    resp = _get(proxy, "/videos")
    upstream = sim.requests[-1].request_id
    assert resp.status_code == 429
    # the upstream's Retry-After and x-request-id come prefixed; no Retry-After of its own
    assert "retry-after" not in resp.headers
    assert resp.headers["llm_provider-retry-after"] == "2"
    assert resp.headers["llm_provider-x-request-id"] == upstream
    assert resp.headers["request-id"] == upstream
    assert "x-litellm-call-id" in resp.headers
    sim.faults.push(Fault.server_error(503))
    assert _get(proxy, "/videos").status_code == 503
    assert [r.status for r in sim.requests] == [429, 503]  # the proxy retried neither


# --- `ingester` through the proxy (issue 11) ---------------------------------------------------


def _ingester(
    url: str, base_url: str, key: str, *args: str, provider: str = "litellm"
) -> subprocess.CompletedProcess[str]:
    env = clean_env(INGESTER_DATABASE_URL=url, OPENAI_BASE_URL=base_url, OPENAI_API_KEY=key,
                    INGESTER_PROVIDER=provider, INGESTER_SOURCE="gw")  # fmt: skip
    return subprocess.run([INGESTER, *args], env=env, capture_output=True, text=True, timeout=120)


def _mirror(url: str) -> tuple[dict[str, Any], list[Any], list[str]]:
    """(rows by id, transitions in order, error messages) of the mirror."""
    engine = make_engine(url)
    with engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(sa.select(video_jobs))}
        t = video_job_transitions.c
        transitions = list(conn.execute(sa.select(video_job_transitions).order_by(t.id)))
        errors = list(conn.execute(sa.select(sync_errors.c.message)).scalars())
    engine.dispose()
    return rows, transitions, errors


def _current(rows: dict[str, Any], world: World, ids: list[str]) -> None:
    for vid in ids:
        job = world.get(vid)
        row = rows[vid]
        assert (row.status, row.progress, row.prompt, row.missing_since) == (
            job["status"], job["progress"], job["prompt"], None), vid  # fmt: skip


def test_ingester_sync_through_the_proxy_keeps_the_head_and_open_jobs_current(
    litellm_proxy: LiteLLMProxy, tmp_path: Path
) -> None:
    clock = FakeClock(NOW)
    world = World(clock=clock, seed=11)
    world.add_jobs(235, created_at=NOW - 2000, status="completed")
    opened = world.add_jobs(15, created_at=NOW - 30, queued_s=(0, 0), render_s=(600, 900))
    sim = litellm_proxy.serve(world)
    url = f"sqlite:///{tmp_path / 'mirror.db'}"

    def sync() -> dict[str, Any]:
        done = _ingester(url, litellm_proxy.base_url, litellm_proxy.master_key, "sync")
        assert done.returncode == 0, (done.stdout, done.stderr)
        assert "head-only mode: this gateway ignores pagination" in done.stdout
        return _mirror(url)[0]

    assert _ingester(url, litellm_proxy.base_url, "", "migrate").returncode == 0
    rows = sync()
    newest = [job["id"] for job in world.truth()[-20:]]
    assert sorted(rows) == sorted(newest)  # upstream ids, not the proxy's wrapped ones
    _current(rows, world, opened)
    # 10 new jobs push the 5 oldest open ones off the head: they move on, are read by id
    world.add_jobs(10, created_at=NOW - 10, status="completed")
    clock.advance(300)
    sim.reset_log()
    rows = sync()
    read = {r.path.rsplit("/", 1)[1] for r in sim.requests if r.path.startswith("/v1/videos/")}
    assert read == set(opened[:5])
    _current(rows, world, opened)
    assert len(rows) == 30
    clock.advance(1000)  # every open job has finished
    rows = sync()
    _current(rows, world, opened)
    assert {rows[v].status for v in opened} <= {"completed", "failed"}
    assert sum("ignores pagination" in m for m in _mirror(url)[2]) == 1


def test_a_source_switched_to_the_proxy_keeps_one_row_per_job_and_backfill_refuses(
    litellm_proxy: LiteLLMProxy, tmp_path: Path
) -> None:
    clock = FakeClock(NOW)
    world = World(clock=clock, seed=12)
    world.add_jobs(240, created_at=NOW - 2000, status="completed")
    opened = world.add_jobs(10, created_at=NOW - 30, queued_s=(0, 0), render_s=(600, 900))
    sim = litellm_proxy.serve(world)
    url = f"sqlite:///{tmp_path / 'mirror.db'}"
    proxy = (url, litellm_proxy.base_url, litellm_proxy.master_key)
    assert sim.api_key is not None
    assert _ingester(url, litellm_proxy.base_url, "", "migrate").returncode == 0
    direct = _ingester(url, sim.base_url, sim.api_key, "sync", provider="openai")
    assert direct.returncode == 0, direct.stderr
    before = _mirror(url)[0]
    assert len(before) == 250

    clock.advance(300)
    assert _ingester(*proxy, "sync").returncode == 0
    refused = _ingester(*proxy, "backfill")
    assert refused.returncode == 1, (refused.stdout, refused.stderr)
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith("ingester: error: this gateway ignores pagination"), line
    assert "nothing was marked missing" in line
    clock.advance(1000)
    assert _ingester(*proxy, "sync").returncode == 0
    rows, transitions, _ = _mirror(url)
    assert set(rows) == set(before)  # one row per job, under its upstream id
    _current(rows, world, [job["id"] for job in world.truth()])
    chains: dict[str, list[tuple[str | None, str]]] = {}
    for t in transitions:
        chains.setdefault(t.video_id, []).append((t.from_status, t.to_status))
    for vid, chain in chains.items():
        assert [a for a, _ in chain] == [None, *[b for _, b in chain[:-1]]], vid
        assert all(a != b for a, b in chain), vid
    assert {len(chains[v]) for v in set(rows) - set(opened)} == {1}
