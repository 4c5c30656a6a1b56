"""SDI_ settings: types, ranges, precedence, and one clear line for a bad value."""

from __future__ import annotations

import asyncio
import gc
import threading

import pytest
from scrapy.exceptions import NotConfigured
from scrapy.settings import Settings
from scrapy.utils.test import get_crawler

from scrapy_sdi import SDIPipeline, SDIStatus
from scrapy_sdi.errors import SDIConfigError
from scrapy_sdi.settings import SPEC, SDISettings, masked
from tests.support.crawl import run_crawl

API = {"SDI_API_URL": "http://127.0.0.1:8750/api/v1", "SDI_USERNAME": "u", "SDI_PASSWORD": "pw-123"}


def load(values=None, *, environ=None, dotenv=None, spider="myspider"):
    return SDISettings.from_settings(
        Settings(values or {}), spider, environ=environ or {}, dotenv_path=dotenv
    )


def test_defaults_and_crawler_name_from_spider():
    s = load(API)
    assert s.batch_size == 1000 and s.retry_times == 3 and s.buffer == "sqlite"
    assert s.crawler_name == "myspider"
    assert s.buffer_path.endswith("sdi/buffer.db")
    assert s.api_url == "http://127.0.0.1:8750/api/v1"
    assert "pw-123" not in repr(s)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (
            "SDI_BATCH_SIZE",
            "abc",
            "SDI_BATCH_SIZE: 'abc' is not a whole number; expected a whole number from 1 to 1000",
        ),
        (
            "SDI_BATCH_SIZE",
            5000,
            "SDI_BATCH_SIZE: 5000 is out of range; expected a whole number from 1 to 1000",
        ),
        ("SDI_BATCH_SIZE", 2.5, "SDI_BATCH_SIZE: 2.5 is not a whole number"),
        ("SDI_TIMEOUT", "soon", "SDI_TIMEOUT: 'soon' is not a number"),
        ("SDI_TIMEOUT", -1, "SDI_TIMEOUT: -1 is out of range"),
        ("SDI_DEDUP", "maybe", "SDI_DEDUP: 'maybe' is not a boolean; expected True or False"),
        ("SDI_API_URL", "ftp://x", "SDI_API_URL: 'ftp://x' is not an http(s) URL"),
        ("SDI_FIELD_MAP", "[1]", "SDI_FIELD_MAP: "),
        (
            "SDI_LEASE_TIMEOUT",
            10,
            "SDI_LEASE_TIMEOUT: 10 is not longer than SDI_TIMEOUT (30); expected a longer lease",
        ),
        (
            "SDI_RETRY_BACKOFF_MAX",
            0.1,
            "SDI_RETRY_BACKOFF_MAX: 0.1 is below SDI_RETRY_BACKOFF_BASE (0.5); expected at least",
        ),
        (
            "SDI_BUFFER",
            "no.such.Class",
            "SDI_BUFFER: 'no.such.Class' is neither 'sqlite', 'memory', 'postgres' nor an importable class",
        ),
        (
            "SDI_BUFFER",
            "scrapy_sdi.errors.SDIError",
            "SDI_BUFFER: 'scrapy_sdi.errors.SDIError' is not a subclass of scrapy_sdi.buffer.Buffer",
        ),
        (
            "SDI_FIELD_MAP",
            {"sku": "id"},
            "SDI_FIELD_MAP: {'sku': 'id'} cannot be used: SDI_FIELD_MAP cannot map to 'id'",
        ),
        (
            "SDI_AUDIT_ROTATION",
            "whenever",
            "SDI_AUDIT_ROTATION: 'whenever' is not a rotation loguru understands",
        ),
        (
            "SDI_AUDIT_RETENTION",
            "forever",
            "SDI_AUDIT_RETENTION: 'forever' is not a retention loguru understands",
        ),
    ],
)
def test_a_bad_value_is_one_line_naming_the_setting(name, value, message):
    with pytest.raises(SDIConfigError) as info:
        load({**API, name: value})
    text = str(info.value)
    assert text.startswith(message)
    assert "\n" not in text


def test_missing_credentials_are_named():
    with pytest.raises(SDIConfigError, match="^SDI_API_URL: not set"):
        load({})
    with pytest.raises(SDIConfigError, match="^SDI_PASSWORD: not set"):
        load({"SDI_API_URL": API["SDI_API_URL"], "SDI_USERNAME": "u"})
    assert load(
        {"SDI_API_URL": API["SDI_API_URL"], "SDI_DRY_RUN": True}
    ).dry_run  # dry run needs no login


def test_precedence_settings_then_environment_then_dotenv(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        'SDI_USERNAME="from-dotenv"\nSDI_PASSWORD=dotenv-pw\nOTHER_SECRET=x\nSDI_API_URL=http://dotenv/api\n'
    )
    s = load(
        {}, environ={"SDI_USERNAME": "from-env", "SDI_API_URL": "http://env/api"}, dotenv=dotenv
    )
    assert (s.username, s.password, s.api_url) == ("from-env", "dotenv-pw", "http://env/api")
    assert s.sources["SDI_USERNAME"] == "environment" and s.sources["SDI_PASSWORD"] == ".env"
    s = load(
        {"SDI_USERNAME": "from-settings", "SDI_PASSWORD": None},
        environ={"SDI_USERNAME": "from-env"},
        dotenv=dotenv,
    )
    assert s.username == "from-settings" and s.sources["SDI_USERNAME"] == "settings"
    assert s.password == "dotenv-pw"  # an empty/None setting counts as unset


def test_buffer_path_falls_back_to_the_environment_variable():
    s = load(API, environ={"DEFAULT_LOCAL_DATABASE_PATH": "/var/tmp/x.db"})
    assert s.buffer_path == "/var/tmp/x.db"
    assert (
        load(
            {**API, "SDI_BUFFER_PATH": "/a/b.db"}, environ={"DEFAULT_LOCAL_DATABASE_PATH": "/x"}
        ).buffer_path
        == "/a/b.db"
    )


def test_masking_and_every_setting_documented():
    assert masked("SDI_PASSWORD", "pw") == "***" and masked("SDI_PASSWORD", "") == "(not set)"
    assert masked("SDI_BATCH_SIZE", 5) == "5"
    assert all(name.startswith("SDI_") and doc for name, (_, _, doc) in SPEC.items())


def test_sdi_enabled_false_raises_not_configured():
    crawler = get_crawler(settings_dict={"SDI_ENABLED": False})
    with pytest.raises(NotConfigured):
        SDIPipeline.from_crawler(crawler)
    with pytest.raises(NotConfigured):
        SDIStatus.from_crawler(crawler)


def test_settings_for_logs_one_error_line_and_raises(caplog):
    crawler = get_crawler(settings_dict={**API, "SDI_ENABLED": "maybe"})
    with pytest.raises(SDIConfigError):
        SDIPipeline.from_crawler(crawler)
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == [
        "Bad scrapy_sdi setting: SDI_ENABLED: 'maybe' is not a boolean; expected True or False"
    ]


def test_only_the_logged_error_is_kept_from_asyncio_s_report():
    """The line replaces asyncio's report of that error, never of another one ending the task."""

    async def crawl(then: Exception | None) -> None:
        try:
            SDIStatus.from_crawler(get_crawler(settings_dict={**API, "SDI_BATCH_SIZE": "lots"}))
        except SDIConfigError:
            if then is None:
                raise
            raise then from None

    def run() -> None:  # a loop of its own, in a thread: the test reactor's loop is running here
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(lambda _loop, context: reported.append(context["exception"]))
        for then in (None, RuntimeError("closing failed too")):
            loop.run_until_complete(asyncio.wait([loop.create_task(crawl(then))]))
        gc.collect()  # asyncio reports an unretrieved exception when the task is collected
        loop.close()

    reported: list[BaseException] = []
    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    assert [str(error) for error in reported] == ["closing failed too"]


@pytest.mark.parametrize(
    ("name", "value", "line"),
    [
        (
            "SDI_BATCH_SIZE",
            "lots",
            "SDI_BATCH_SIZE: 'lots' is not a whole number; expected a whole number from 1 to 1000",
        ),
        (
            "SDI_BUFFER",
            "no.such.Class",
            "SDI_BUFFER: 'no.such.Class' is neither 'sqlite', 'memory', 'postgres' nor an importable class: No module named 'no'",
        ),
    ],
)
def test_a_crawl_with_a_bad_setting_stops_at_start_with_one_clear_line(tmp_path, name, value, line):
    # the asyncio reactor (or none) runs the crawl in an asyncio task; see tests/promises/test_bad_settings.py
    # for the Deferred-based CrawlerProcess of a plain Twisted reactor
    asyncio_reactor = {"TWISTED_REACTOR": "twisted.internet.asyncioreactor.AsyncioSelectorReactor"}
    settings = {**API, **asyncio_reactor, name: value, "SDI_BUFFER_PATH": str(tmp_path / "b.db")}
    result = run_crawl(tmp_path, settings, {"n": 5})
    assert result.returncode == 1
    naming = [text for text in result.log.splitlines() if name + ":" in text]
    assert len(naming) == 1 and naming[0].endswith(" ERROR: Bad scrapy_sdi setting: " + line), (
        result.log[-3000:]
    )
    assert "Traceback" not in result.log and "Task exception was never retrieved" not in result.log
    assert "pw-123" not in result.log
    assert not (tmp_path / "b.db").exists()  # nothing started
