"""The per-source request budget: a token bucket, and a source-wide pause on 429."""

from __future__ import annotations

from ingester.api import VideosClient
from ingester.budget import RequestBudget
from ingester.config import Secret, SourceSettings
from ingester.simulator import Fault, Simulator, World


class Time:
    """A fake monotonic clock whose sleep advances it."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s


def test_token_bucket_spends_at_most_the_rate() -> None:
    t = Time()
    budget = RequestBudget(60, t.sleep, t.clock)  # one per second, burst of 10
    for _ in range(40):
        budget.acquire()
    # 10 from the burst, then one a second: 30 more requests need ~30 s
    assert 29.9 <= t.now - 100.0 <= 30.1


def test_no_rate_means_no_wait_and_pause_holds_everything() -> None:
    t = Time()
    budget = RequestBudget(None, t.sleep, t.clock)
    for _ in range(100):
        budget.acquire()
    assert t.slept == []
    budget.pause(7.5)
    budget.pause(2.0)  # a shorter pause never shortens the longer one
    budget.acquire()
    assert t.slept == [7.5]


def test_a_429_makes_every_request_of_the_source_wait() -> None:
    world = World(seed=2)
    ids = world.add_jobs(5, created_at=1_763_000_000, status="completed")
    with Simulator(world, api_key="sk-budget-test") as sim:
        source = SourceSettings(base_url=sim.base_url, api_key=Secret("sk-budget-test"))
        t = Time()
        budget = RequestBudget(None, t.sleep, t.clock)
        client = VideosClient(source, sleep=t.sleep, clock=t.clock, budget=budget)
        sim.faults.push(Fault.rate_limited(retry_after=3), count=1, path_contains="/videos?")
        page = client.list_page(after=None, order="asc", limit=100)
        assert len(page.items) == 5
        waited_before = t.now
        # a different request (retrieve by id) right after must also respect the pause
        t.now -= 2.0  # pretend only 1 s passed since the 429
        assert client.get_video(ids[0]) is not None
        assert t.now >= waited_before, "the retrieve went out before the source's pause ended"
        assert any(s >= 2.0 - 1e-9 for s in t.slept[1:]), t.slept
        client.close()


def test_a_delay_a_pause_and_the_rate_make_one_wait() -> None:
    t = Time()
    budget = RequestBudget(None, t.sleep, t.clock)
    budget.acquire(0.5)  # a retry's back-off
    budget.pause(2.0)
    budget.acquire(0.5)  # the longer of the two, not their sum
    assert t.slept == [0.5, 2.0]
    rated = RequestBudget(60, t.sleep, t.clock)
    for _ in range(10):
        rated.acquire()  # the burst
    rated.acquire(0.25)  # the next token is 1 s away: that wait covers the back-off
    assert t.slept[2:] == [1.0]


def test_a_pause_that_comes_during_a_wait_is_served_too() -> None:
    t = Time()

    def sleep(seconds: float) -> None:
        t.sleep(seconds)
        if len(t.slept) == 1:
            budget.pause(3.0)  # another request's 429, while this one waits its 1 s

    budget = RequestBudget(None, sleep, t.clock)
    budget.pause(1.0)
    budget.acquire()
    assert t.slept == [1.0, 3.0]
