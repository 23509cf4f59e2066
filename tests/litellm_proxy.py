"""The real LiteLLM proxy 1.110.2 on loopback, in front of a simulator (the gateway tests).

`scripts/litellm-proxy-venv` installs it into a venv of its own ($INGESTER_LITELLM_VENV,
default /opt/ingester-litellm/venv). Without that venv the tests that need the proxy are
skipped, unless INGESTER_REQUIRE_LITELLM=1 (as `.ci/run` sets), which makes them fail.

Started as ../shared/gateways/README.md says: no `--config` (with one the list goes through the
router and answers 400), the upstream given by `--api_base`, the key it expects in
OPENAI_API_KEY. Clients send the master key as `Authorization: Bearer` and the header
`custom-llm-provider: openai`.
"""

from __future__ import annotations

import base64
import os
import secrets
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from ingester.config import Secret, SourceSettings
from ingester.simulator import Simulator, World
from tests.proc import free_port

VENV = Path(os.environ.get("INGESTER_LITELLM_VENV") or "/opt/ingester-litellm/venv")
START_TIMEOUT_S = 120.0
PROVIDER_HEADER = ("custom-llm-provider", "openai")
ID_PREFIX = "litellm:custom_llm_provider:openai;model_id:"

# The proxy must reach nothing but loopback: no model cost map, release check or other catalog
# fetched from the internet (offline mode covers them all), telemetry vetoed (it is off unless
# configured, and has no default endpoint).
_OFFLINE_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_OFFLINE_MODE": "true",
    "LITELLM_TELEMETRY_DISABLED": "true",
}


def unwrap_id(wrapped: str) -> tuple[str, str]:
    """(model_id, raw upstream id) of a proxy id `video_` + base64(`litellm:…;video_id:<raw>`)."""
    assert wrapped.startswith("video_"), wrapped
    text = base64.b64decode(wrapped.removeprefix("video_"), validate=True).decode()
    assert text.startswith(ID_PREFIX), text
    # model_id is the job's model verbatim, which may itself hold `;`: split at the last marker.
    model_id, sep, raw = text.removeprefix(ID_PREFIX).rpartition(";video_id:")
    assert sep, text
    return model_id, raw


@dataclass
class LiteLLMProxy:
    """A running proxy and the simulator behind it."""

    base_url: str  # http://127.0.0.1:P/v1: `GET {base_url}/videos` is the list
    master_key: str
    simulator: Simulator

    @property
    def headers(self) -> dict[str, str]:
        """What every client request carries: the master key and the provider header."""
        return {
            "Authorization": f"Bearer {self.master_key}",
            PROVIDER_HEADER[0]: PROVIDER_HEADER[1],
        }

    def source_settings(self, **overrides: Any) -> SourceSettings:
        """A source that mirrors the simulator through the proxy."""
        values: dict[str, Any] = {
            "name": "litellm",
            "base_url": self.base_url,
            "api_key": Secret(self.master_key),
            "extra_headers": (PROVIDER_HEADER,),
        }
        return SourceSettings(**{**values, **overrides})

    def serve(self, world: World) -> Simulator:
        """Put `world` behind the proxy with the simulator's defaults, no faults, an empty log."""
        sim = self.simulator
        sim.world = world
        sim.default_limit, sim.default_order = 20, "desc"
        sim.faults.clear()
        sim.reset_log()
        return sim


def _unavailable(reason: str) -> None:
    if os.environ.get("INGESTER_REQUIRE_LITELLM") == "1":
        pytest.fail(f"{reason} (INGESTER_REQUIRE_LITELLM=1: the proxy tests must not be skipped)")
    pytest.skip(reason)


def _tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:]


@contextmanager
def running_litellm_proxy(world: World | None = None) -> Iterator[LiteLLMProxy]:
    """Start a simulator (profile openai) and the proxy in front of it; stop both after."""
    litellm = VENV / "bin" / "litellm"
    if not os.access(litellm, os.X_OK):
        _unavailable(f"LiteLLM proxy tests need scripts/litellm-proxy-venv (no {litellm})")
    master_key = "sk-" + secrets.token_urlsafe(32)
    with (
        Simulator(world or World(), api_key="sk-sim-" + secrets.token_hex(16)) as sim,
        tempfile.TemporaryDirectory(prefix="litellm-") as tmp,
    ):
        port = free_port()
        log = Path(tmp) / "proxy.log"
        # A bare environment: nothing of ours (DATABASE_URL, proxies, OPENAI_BASE_URL, …) leaks
        # into the proxy, and its home is a throwaway directory.
        assert sim.api_key is not None
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": tmp,
            "LANG": "C.UTF-8",
            **_OFFLINE_ENV,
            "LITELLM_MASTER_KEY": master_key,
            "OPENAI_API_KEY": sim.api_key,
        }
        args = ["--host", "127.0.0.1", "--port", str(port), "--api_base", sim.base_url]
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [str(litellm), *args],
                env=env,
                cwd=tmp,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, so stopping it stops any child
            )
        try:
            _wait_ready(proc, f"http://127.0.0.1:{port}/health/liveliness", log)
            yield LiteLLMProxy(f"http://127.0.0.1:{port}/v1", master_key, sim)
        finally:
            _stop(proc)


def _wait_ready(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            pytest.fail(f"LiteLLM proxy exited ({proc.returncode}) at start:\n{_tail(log)}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"LiteLLM proxy not ready within {START_TIMEOUT_S:g} s:\n{_tail(log)}")
        time.sleep(0.2)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=15)
            return
        except subprocess.TimeoutExpired:
            continue
    proc.wait()
