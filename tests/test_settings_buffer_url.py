"""SDI_BUFFER_URL: the PostgreSQL buffer's database, read like the other secrets, never shown whole."""

from __future__ import annotations

import pytest
from scrapy.settings import Settings

from scrapy_sdi.errors import SDIConfigError
from scrapy_sdi.settings import SDISettings, display_url, masked, shown
from tests.support.commands import command_env, sdi
from tests.support.crawl import run_crawl

SECRET = "pg-Url-Secret-93"
API = {"SDI_API_URL": "http://127.0.0.1:9/api/v1", "SDI_USERNAME": "u", "SDI_PASSWORD": "pw-123"}
URL = f"postgresql://sdi:{SECRET}@db.example:5432/crawl"
POSTGRES = {**API, "SDI_BUFFER": "postgres"}


def load(values, *, environ=None, dotenv=None, require_api=True):
    return SDISettings.from_settings(
        Settings(values), "s", environ=environ or {}, dotenv_path=dotenv, require_api=require_api
    )


def error(values, **kwargs) -> str:
    with pytest.raises(SDIConfigError) as info:
        load(values, **kwargs)
    text = str(info.value)
    assert "\n" not in text and SECRET not in text, text
    return text


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_a_postgresql_url_is_taken_and_never_in_the_repr(scheme):
    url = URL.replace("postgresql", scheme, 1)
    s = load({**POSTGRES, "SDI_BUFFER_URL": url})
    assert s.buffer_url == url and s.sources["SDI_BUFFER_URL"] == "settings"
    assert SECRET not in repr(s)


def test_it_comes_from_the_environment_or_dotenv_like_the_other_secrets(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text(f"SDI_BUFFER_URL={URL}\n")
    s = load(POSTGRES, dotenv=dotenv)
    assert (s.buffer_url, s.sources["SDI_BUFFER_URL"]) == (URL, ".env")
    other = URL.replace("db.example", "env.example")
    s = load(POSTGRES, environ={"SDI_BUFFER_URL": other}, dotenv=dotenv)
    assert (s.buffer_url, s.sources["SDI_BUFFER_URL"]) == (other, "environment")
    s = load({**POSTGRES, "SDI_BUFFER_URL": URL}, environ={"SDI_BUFFER_URL": other})
    assert s.sources["SDI_BUFFER_URL"] == "settings"


def test_postgres_without_a_url_is_one_line_naming_it():
    assert error(POSTGRES).startswith("SDI_BUFFER_URL: not set; SDI_BUFFER = 'postgres' needs")
    assert error(
        {**POSTGRES, "SDI_BUFFER": "scrapy_sdi.buffer_postgres.PostgresBuffer"}
    ).startswith("SDI_BUFFER_URL: not set")
    assert load({**POSTGRES, "SDI_DRY_RUN": True}).buffer_url == ""  # a dry run opens no buffer
    assert load(API).buffer_url == ""  # SQLite needs none
    assert load(POSTGRES, require_api=False).buffer == "postgres"  # `scrapy sdi settings` shows it


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            f"mysql://sdi:{SECRET}@db/crawl",
            "SDI_BUFFER_URL: 'mysql://sdi:***@db/crawl' is not a PostgreSQL URL; expected postgresql://",
        ),
        (
            f"http://db/crawl?password={SECRET}",
            "SDI_BUFFER_URL: 'http://db/crawl?password=***' is not a PostgreSQL URL",
        ),
        (f"sdi:{SECRET}@db/crawl", "SDI_BUFFER_URL: not a URL; expected postgresql://"),
        (f"host=db password={SECRET}", "SDI_BUFFER_URL: not a URL; expected postgresql://"),
    ],
)
def test_a_url_that_is_not_postgresql_is_one_line_without_the_password(url, message):
    assert error({**POSTGRES, "SDI_BUFFER_URL": url}).startswith(message)
    assert error({**API, "SDI_BUFFER_URL": url}).startswith(message)  # whatever the buffer


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (URL, "postgresql://sdi:***@db.example:5432/crawl"),
        (f"postgres://:{SECRET}@db/crawl", "postgres://:***@db/crawl"),
        (
            f"postgresql://sdi@db/crawl?sslmode=require&password={SECRET}&x=1",
            "postgresql://sdi@db/crawl?sslmode=require&password=***&x=1",
        ),
        (f"postgresql://sdi:{SECRET}@h1:5432,h2:5433/c", "postgresql://sdi:***@h1:5432,h2:5433/c"),
        ("postgresql:///crawl?host=/run/pg", "postgresql:///crawl?host=/run/pg"),
    ],
)
def test_shown_with_the_password_masked(url, expected):
    assert display_url(url) == expected
    assert shown("SDI_BUFFER_URL", url) == expected and masked("SDI_BUFFER_URL", url) == repr(
        expected
    )


def test_nothing_shown_depends_on_a_short_password():
    def all_shown(password: str) -> list[str]:
        url = f"postgresql://sdi:{password}@db/crawl?password={password}"
        texts = [shown("SDI_BUFFER_URL", url), masked("SDI_BUFFER_URL", url)]
        bad = url.replace("postgresql", "mysql", 1)
        try:
            load({**POSTGRES, "SDI_BUFFER_URL": bad})
        except SDIConfigError as exc:
            texts.append(str(exc))
        return texts

    for password in ("p", "sql", "postgres", "1", "db"):
        assert all_shown(password) == all_shown("Z" * len(password)), password


def test_scrapy_sdi_settings_shows_it_masked_with_its_source(tmp_path):
    (tmp_path / ".env").write_text(f"SDI_BUFFER_URL={URL}\n")
    proc = sdi(tmp_path, "settings", settings={"SDI_BUFFER": "postgres"}, secret=SECRET)
    assert proc.returncode == 0, proc.stderr
    (line,) = [text for text in proc.stdout.splitlines() if text.startswith("SDI_BUFFER_URL")]
    assert "'postgresql://sdi:***@db.example:5432/crawl'" in line and ".env" in line, line
    missing = sdi(tmp_path / "..", "settings", settings={"SDI_BUFFER": "postgres"})
    (line,) = [text for text in missing.stdout.splitlines() if text.startswith("SDI_BUFFER_URL")]
    assert "(not set, required)" in line, line


def test_scrapy_sdi_settings_takes_it_from_the_environment(tmp_path):
    env = command_env(SDI_BUFFER_URL=URL)
    proc = sdi(tmp_path, "settings", "--json", settings={"SDI_BUFFER": "postgres"}, env=env)
    assert proc.returncode == 0 and SECRET not in proc.stdout, proc.stderr
    assert '"value": "postgresql://sdi:***@db.example:5432/crawl"' in proc.stdout
    assert '"source": "environment"' in proc.stdout


@pytest.mark.parametrize(
    ("values", "line"),
    [
        ({}, "SDI_BUFFER_URL: not set; SDI_BUFFER = 'postgres' needs the database's URL"),
        (
            {"SDI_BUFFER_URL": URL.replace("postgresql", "mysql", 1)},
            "SDI_BUFFER_URL: 'mysql://sdi:***@db.example:5432/crawl' is not a PostgreSQL URL",
        ),
    ],
)
def test_a_crawl_on_postgres_without_a_good_url_stops_at_start_in_one_line(tmp_path, values, line):
    settings = {**POSTGRES, **values, "SDI_BUFFER_PATH": str(tmp_path / "b.db")}
    result = run_crawl(tmp_path, settings, {"n": 5})
    assert result.returncode == 1
    naming = [text for text in result.log.splitlines() if "SDI_BUFFER_URL" in text]
    assert len(naming) == 1 and " ERROR: Bad scrapy_sdi setting: " + line in naming[0], result.log[
        -3000:
    ]
    assert "Traceback" not in result.log and SECRET not in result.log
    assert "Spider opened" not in result.log
