"""Settings: flags over environment over TOML; keys from env, files or systemd credentials."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingester.config import Secret, load_settings
from ingester.errors import ConfigError

KEY = "sk-config-DISTINCTIVE-0042"


def write(tmp: Path, text: str) -> str:
    path = tmp / "ingester.toml"
    path.write_text(text)
    return str(path)


def test_precedence_flags_then_environment_then_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'database_url = "sqlite:///file.db"\nsync_interval_s = 30\n'
                           "idle_interval_s = 300\n")  # fmt: skip
    env = {"INGESTER_SYNC_INTERVAL_S": "20", "INGESTER_DATABASE_URL": "sqlite:///env.db"}
    s = load_settings({"database_url": "sqlite:///flag.db"}, env, path)
    assert s.database_url.reveal() == "sqlite:///flag.db"
    assert s.sync_interval_s == 20 and s.idle_interval_s == 300
    assert load_settings({}, {}, path).database_url.reveal() == "sqlite:///file.db"
    assert load_settings({}, {}).database_url.reveal() == "sqlite:///ingester.db"
    assert load_settings({}, {}).effective_idle_interval_s == 60


def test_environment_only_single_source() -> None:
    env = {"OPENAI_API_KEY": KEY, "INGESTER_PROVIDER": "azure",
           "OPENAI_BASE_URL": "https://r.openai.azure.com/openai/v1/", "INGESTER_PAGE_SIZE": "50",
           "OPENAI_ORG_ID": "org-1", "OPENAI_PROJECT_ID": "proj-1"}  # fmt: skip
    src = load_settings({}, env).source(None)
    assert (src.provider, src.page_size) == ("azure", 50)
    assert src.base_url == "https://r.openai.azure.com/openai/v1"
    headers = src.auth_headers()
    assert headers["api-key"] == KEY and "Authorization" not in headers
    assert headers["OpenAI-Organization"] == "org-1" and headers["OpenAI-Project"] == "proj-1"
    openai = load_settings({}, {"OPENAI_API_KEY": KEY}).source(None)
    assert openai.auth_headers() == {"Authorization": f"Bearer {KEY}"}


def test_several_sources_with_keys_from_env_file_and_credentials(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "-file\n")
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "c-api-key").write_text(KEY + "-cred")
    path = write(
        tmp_path,
        f"""
[[sources]]
name = "a"
base_url = "https://a.example/v1"
api_key_env = "A_KEY"
headers = {{ "X-Team" = "video" }}
[[sources]]
name = "b"
provider = "azure"
base_url = "https://b.example/openai/v1"
api_key_file = "{key_file}"
list_window_s = 86400
open_statuses = ["queued", "in_progress", "processing"]
terminal_statuses = ["completed", "failed", "cancelled"]
[[sources]]
name = "c"
base_url = "https://c.example/v1"
""",
    )
    s = load_settings({}, {"A_KEY": KEY + "-env", "CREDENTIALS_DIRECTORY": str(creds)}, path)
    a, b, c = (s.source(n) for n in "abc")
    assert a.auth_headers() == {"Authorization": f"Bearer {KEY}-env", "X-Team": "video"}
    assert b.auth_headers() == {"api-key": f"{KEY}-file"}
    assert c.auth_headers() == {"Authorization": f"Bearer {KEY}-cred"}
    assert b.list_window_s == 86400 and "processing" in b.open_statuses
    with pytest.raises(ConfigError, match="several sources"):
        s.source(None)
    for shown in (repr(s), str(s), repr(a), repr(b), repr(c), repr(s.database_url)):
        assert KEY not in shown


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("bogus = 1\n", "unknown setting"),
        ('[[sources]]\nname = "x"\nbase_url = "https://x/v1"\ncolour = "red"\n', "unknown source"),
        ('[[sources]]\nname = "x"\nbase_url = "https://x/v1"\napi_key_env = "NOPE"\n', "not set"),
        ('[[sources]]\nname = "x"\nbase_url = "ftp://x/v1"\n', "http(s) URL"),
        ('[[sources]]\nname = "x"\nbase_url = "http://example.com/v1"\n', "plain http"),
        (
            '[[sources]]\nname = "x"\nbase_url = "https://x/v1"\n[[sources]]\nname = "x"\n'
            'base_url = "https://y/v1"\n',
            "unique",
        ),
        ('[[sources]]\nname = "bad name!"\nbase_url = "https://x/v1"\n', "source name"),
        ("sync_interval_s = -1\n", "sync_interval_s"),
        ("sync_interval_s = [\n", "not valid TOML"),
    ],
)
def test_bad_files_are_clear_config_errors(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        load_settings({}, {}, write(tmp_path, text))


def test_plain_http_allowed_to_loopback_or_when_asked() -> None:
    assert load_settings({}, {"OPENAI_BASE_URL": "http://127.0.0.1:8000/v1"})
    assert load_settings({}, {"OPENAI_BASE_URL": "http://[::1]:8000/v1"})
    env = {"OPENAI_BASE_URL": "http://gateway.internal/v1", "INGESTER_ALLOW_INSECURE_HTTP": "1"}
    assert load_settings({}, env).source(None).allow_insecure_http


def test_secret_never_shows() -> None:
    s = Secret(KEY)
    assert KEY not in repr(s) and KEY not in str(s) and KEY not in f"{s}" and s.reveal() == KEY


def test_a_key_given_as_a_header_counts_as_a_key(tmp_path: Path) -> None:
    path = write(tmp_path, '[[sources]]\nname = "gw"\nbase_url = "https://gw.test/v1"\n'
                           '[sources.headers]\napi-key = "k-0123456789"\n')  # fmt: skip
    load_settings({}, {}, path).sources[0].require_key()  # no error
    with pytest.raises(ConfigError, match="source default has no API key"):
        load_settings({}, {}).sources[0].require_key()
