"""``scrapy sdi <action>`` run as users run it: a subprocess, outside any project, settings via -s.

Every run goes through ``sdi()``, which also asserts that the password never reaches stdout or
stderr. Buffers are filled directly through the buffer's enqueue (one test makes one with a real
crawl while the API is down), and deliveries are checked against what the reference server stored.
Tests taking ``store`` run on a SQLite file and on a database of a real private PostgreSQL server.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from scrapy_sdi.buffer import DELIVERED, IN_FLIGHT, INVALID, PENDING, REJECTED
from tests.support.commands import (
    Store,
    command_env,
    fill,
    sdi,
    sdi_command,
    settings_for,
    urls,
)
from tests.support.crawl import ROOT, run_crawl
from tests.support.postgres import PASSWORD
from tests.support.spiders import BAD_ITEMS, LINK_URL


def _sigint_as_in_a_terminal() -> None:
    """In the child: SIGINT raises KeyboardInterrupt even when the test runner ignores it
    (pytest-xdist's workers do, and an ignored signal stays ignored across exec)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def states(path: Path) -> dict[str, str]:
    with sqlite3.connect(path) as db:
        return dict(db.execute("SELECT id, state FROM results"))


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path) -> Store:
    """The command's buffer: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        return Store("sqlite", tmp_path)
    db = request.getfixturevalue("postgres_db")
    return Store("postgres", tmp_path, db.url, PASSWORD)


# -- the command's surface ----------------------------------------------------------------------


@pytest.mark.smoke
def test_help_lists_every_action_and_usage_errors_exit_2(tmp_path):
    main = sdi(tmp_path, "--help")
    assert main.returncode == 0
    for action in (
        "check",
        "status",
        "buffer",
        "flush",
        "export",
        "requeue",
        "settings",
        "dashboard",
        "metrics",
    ):
        assert f"    {action} " in main.stdout, action
    one = sdi(tmp_path, "export", "--help")
    assert one.returncode == 0 and "--format" in one.stdout and "--state" in one.stdout
    assert sdi(tmp_path).returncode == 2
    neither = sdi(tmp_path, "status", settings={"SDI_API_URL": "http://127.0.0.1:9/api/v1"})
    assert neither.returncode == 2 and "--url" in neither.stderr


def _headings(help_text: str) -> list[str]:
    """The lines the help underlines: the headings a reader sees."""
    lines = help_text.splitlines()
    return [
        above
        for above, line in zip(lines, lines[1:], strict=False)
        if line and set(line) <= {"=", "-"}
    ]


def _reads_as_written(help_text: str, written: str) -> bool:
    return " ".join(written.split()) in " ".join(help_text.split())


def test_requeue_help_reads_as_written(tmp_path):
    written = (
        "rows to send again: rejected ones as they are; invalid ones are first mapped and validated again "
        "(SDI_FIELD_MAP), and those still invalid stay invalid with the new reason"
    )
    for columns in ("80", "100"):
        proc = sdi(tmp_path, "requeue", "--help", env=command_env(COLUMNS=columns))
        assert proc.returncode == 0, proc.stderr
        assert _headings(proc.stdout) == ["Usage", "Options", "Global Options"], proc.stdout
        assert _reads_as_written(proc.stdout, written), proc.stdout


def test_a_help_line_ending_in_a_colon_is_no_heading(monkeypatch):
    from scrapy_sdi.commands.sdi import HelpFormatter

    written = (
        "rows to send again (invalid rows are resent as stored: the API may refuse them: or not)"
    )
    for width in range(40, 121):  # the colons fall at the end of a line at some widths
        monkeypatch.setenv("COLUMNS", str(width))
        parser = argparse.ArgumentParser(prog="scrapy sdi requeue", formatter_class=HelpFormatter)
        parser.add_argument("--state", help=written)
        parser.add_argument_group("Global Options").add_argument("-s", help="set a setting:")
        help_text = parser.format_help()
        assert _headings(help_text) == ["Usage", "Options", "Global Options"], help_text
        assert _reads_as_written(help_text, written) and "set a setting:" in help_text, help_text


def test_a_bad_setting_is_one_line_and_exit_1(tmp_path):
    proc = sdi(
        tmp_path,
        "buffer",
        settings={"SDI_BATCH_SIZE": "0", "SDI_BUFFER_PATH": str(tmp_path / "b.db")},
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "SDI_BATCH_SIZE" in proc.stderr
    missing = sdi(tmp_path, "buffer", settings={"SDI_BUFFER_PATH": str(tmp_path / "nothing.db")})
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    assert not (tmp_path / "nothing.db").exists()


def test_dashboard_is_optional(tmp_path):
    proc = sdi(tmp_path, "dashboard", "--help")
    try:
        from scrapy_sdi.dashboard import add_arguments, run  # noqa: F401
    except ImportError:
        assert proc.returncode == 1 and "not available" in proc.stderr
    else:  # the dashboard exists: its own parser answers --help, listing the global options too
        assert proc.returncode == 0 and "scrapy sdi dashboard" in proc.stdout
        assert "--port" in proc.stdout and "-s NAME=VALUE, --set NAME=VALUE" in proc.stdout, (
            proc.stdout
        )
        assert "--loglevel" in proc.stdout and "--nolog" in proc.stdout


# -- check --------------------------------------------------------------------------------------


@pytest.mark.smoke
def test_check_passes_then_fails_when_the_api_is_down(sdi_server, tmp_path, store):
    settings = store.command_settings(sdi_server)
    store.fill("c", urls(3))
    ok = sdi(tmp_path, "check", "--json", settings=settings, secret=sdi_server.password)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    report = json.loads(ok.stdout)
    assert report["ok"] and [c["check"] for c in report["checks"]] == [
        "settings",
        "health",
        "login",
        "filters",
        "buffer",
    ]
    assert "3 pending" in report["checks"][-1]["detail"]
    sdi_server.stop()
    down = sdi(tmp_path, "check", settings=settings, secret=sdi_server.password)
    assert down.returncode == 1
    assert any(line.startswith("FAIL  health") for line in down.stdout.splitlines()), down.stdout
    assert "ok    buffer" in down.stdout


def test_check_outside_a_project_creates_no_file(tmp_path):
    settings = {
        "SDI_API_URL": "http://127.0.0.1:9/api/v1",
        "SDI_USERNAME": "u",
        "SDI_PASSWORD": "pw",
    }
    proc = sdi(tmp_path, "check", "--json", settings=settings)
    assert proc.returncode == 1  # the API is unreachable
    buffer = next(c for c in json.loads(proc.stdout)["checks"] if c["check"] == "buffer")
    assert (
        buffer["ok"]
        and "does not exist yet" in buffer["detail"]
        and f"{tmp_path} is writable" in buffer["detail"]
    )
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "a-file").write_text("")  # no directory can be made under a file, not even by root
    blocked = sdi(
        tmp_path,
        "check",
        "--json",
        settings={**settings, "SDI_BUFFER_PATH": str(tmp_path / "a-file" / "b.db")},
    )
    buffer = next(c for c in json.loads(blocked.stdout)["checks"] if c["check"] == "buffer")
    assert not buffer["ok"] and "not a writable directory" in buffer["detail"], buffer


def test_check_on_postgresql_names_the_server_and_both_schema_versions(
    sdi_server, tmp_path, postgres_db
):
    from scrapy_sdi.buffer_postgres import SCHEMA_VERSION

    store = Store("postgres", tmp_path, postgres_db.url, PASSWORD)
    settings = store.command_settings(sdi_server)
    version = postgres_db.server.psql("SHOW server_version")
    fresh = sdi(tmp_path, "check", "--json", settings=settings, secret=sdi_server.password)
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    (detail,) = [c["detail"] for c in json.loads(fresh.stdout)["checks"] if c["check"] == "buffer"]
    assert f"PostgreSQL {version}" in detail and "no scrapy_sdi schema yet" in detail, detail
    assert f"sdi:***@127.0.0.1:{postgres_db.server.port}/{postgres_db.name}" in detail, detail
    # the check created nothing
    tables = "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
    assert postgres_db.server.psql(tables, postgres_db.name) == "0"
    store.fill("c", urls(2))
    used = sdi(tmp_path, "check", settings=settings, secret=sdi_server.password)
    assert used.returncode == 0, used.stdout + used.stderr
    line = next(line for line in used.stdout.splitlines() if line.startswith("ok    buffer"))
    assert (
        f"reachable, PostgreSQL {version}, schema {SCHEMA_VERSION}: 2 pending, 0 delivered" in line
    ), line
    postgres_db.server.psql("UPDATE sdi_schema SET version = 99", postgres_db.name)
    newer = sdi(tmp_path, "check", settings=settings, secret=sdi_server.password)
    assert newer.returncode == 1
    line = next(line for line in newer.stdout.splitlines() if line.startswith("FAIL  buffer"))
    assert "schema 99, newer than this scrapy_sdi knows" in line, line


def test_check_on_an_unreachable_postgresql_is_one_line_without_the_password(
    sdi_server, tmp_path, postgres_server
):
    from tests.support.postgres import _free_port

    port = _free_port()  # nothing listens there
    url = f"postgresql://sdi:{PASSWORD}@127.0.0.1:{port}/crawl"
    settings = {**sdi_server.settings, "SDI_BUFFER": "postgres", "SDI_BUFFER_URL": url}
    proc = sdi(tmp_path, "check", settings=settings, secret=sdi_server.password)
    assert proc.returncode == 1 and proc.stderr == "", proc.stderr
    (line,) = [line for line in proc.stdout.splitlines() if "buffer" in line]
    assert line.startswith("FAIL  buffer") and "unreachable" in line, line
    assert f"postgresql://sdi:***@127.0.0.1:{port}/crawl" in line, line
    for action in ("buffer", "export --state pending", "requeue --state rejected", "metrics"):
        other = sdi(tmp_path, *action.split(), settings=settings)
        assert other.returncode == 1 and other.stdout == "", other.stdout
        (error,) = other.stderr.splitlines()
        assert "unreachable" in error and f"sdi:***@127.0.0.1:{port}" in error, error


def test_a_subclass_of_the_postgresql_buffer_is_checked_and_read_as_one(
    sdi_server, tmp_path, postgres_db
):
    store = Store("postgres", tmp_path, postgres_db.url, PASSWORD)
    store.fill("c", urls(2))
    subclass = {**store.settings, "SDI_BUFFER": "tests.support.commands.TunedPostgresBuffer"}
    check = sdi(tmp_path, "check", settings={**sdi_server.settings, **subclass})
    assert check.returncode == 0, check.stdout + check.stderr
    assert "reachable, PostgreSQL" in check.stdout and "2 pending" in check.stdout, check.stdout
    summary = sdi(tmp_path, "buffer", "--json", settings=subclass)
    assert summary.returncode == 0 and json.loads(summary.stdout)["counts"]["pending"] == 2


def test_actions_refuse_a_database_no_crawl_used(tmp_path, postgres_db):
    """As for a missing file: a wrong SDI_BUFFER_URL is said, not turned into an empty buffer."""
    store = Store("postgres", tmp_path, postgres_db.url, PASSWORD)
    for action in ("buffer", "export --state pending", "requeue --state rejected", "metrics"):
        proc = sdi(tmp_path, *action.split(), settings=store.settings)
        assert proc.returncode == 1, proc.stdout
        (error,) = proc.stderr.splitlines()
        assert "has no scrapy_sdi tables yet" in error and "SDI_BUFFER_URL" in error, error
    tables = "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
    assert postgres_db.server.psql(tables, postgres_db.name) == "0"


# -- settings -----------------------------------------------------------------------------------


def test_settings_marks_missing_required_settings(tmp_path):
    proc = sdi(tmp_path, "settings", settings={"SDI_USERNAME": "someone"})
    assert proc.returncode == 0, proc.stderr
    value = {line.split()[0]: line for line in proc.stdout.splitlines()[1:]}
    assert (
        "(not set, required)" in value["SDI_API_URL"]
        and "(not set, required)" in value["SDI_PASSWORD"]
    )
    assert "required" not in value["SDI_USERNAME"] and "required" not in value["SDI_CRAWLER_NAME"]
    rows = {
        row["name"]: row
        for row in json.loads(sdi(tmp_path, "settings", "--json").stdout)["settings"]
    }
    assert [name for name, row in rows.items() if row["missing_required"]] == [
        "SDI_API_URL",
        "SDI_USERNAME",
        "SDI_PASSWORD",
    ]
    dry = sdi(tmp_path, "settings", "--json", settings={"SDI_DRY_RUN": "True"})
    assert [
        row["name"] for row in json.loads(dry.stdout)["settings"] if row["missing_required"]
    ] == ["SDI_API_URL"]


@pytest.mark.smoke
def test_settings_masks_the_password_and_names_each_source(tmp_path):
    password = "dotenv-s3cret-value"
    (tmp_path / ".env").write_text(f"SDI_PASSWORD={password}\n")
    env = command_env(SDI_USERNAME="env-user")
    settings = {"SDI_API_URL": "http://127.0.0.1:9/api/v1", "SDI_BATCH_SIZE": "50"}
    proc = sdi(
        tmp_path,
        "-s",
        "SDI_TIMEOUT=7",
        "settings",
        "--json",
        settings=settings,
        env=env,
        secret=password,
    )
    assert proc.returncode == 0, proc.stderr
    rows = {row["name"]: row for row in json.loads(proc.stdout)["settings"]}
    from scrapy_sdi.settings import SPEC

    assert set(rows) == set(SPEC)
    assert rows["SDI_PASSWORD"]["value"] == "***" and rows["SDI_PASSWORD"]["source"] == ".env"
    assert rows["SDI_USERNAME"] == {
        **rows["SDI_USERNAME"],
        "value": "env-user",
        "source": "environment",
    }
    assert rows["SDI_BATCH_SIZE"]["value"] == 50 and rows["SDI_BATCH_SIZE"]["source"] == "settings"
    assert rows["SDI_BATCH_SIZE"]["type"] == "int" and rows["SDI_BATCH_SIZE"]["default"] == 1000
    assert (
        rows["SDI_TIMEOUT"]["value"] == 7.0 and rows["SDI_TIMEOUT"]["source"] == "settings"
    )  # -s before the action
    assert rows["SDI_LEASE_TIMEOUT"]["source"] == "default"
    text = sdi(tmp_path, "settings", settings=settings, env=env, secret=password)
    assert text.returncode == 0
    line = next(line for line in text.stdout.splitlines() if line.startswith("SDI_PASSWORD "))
    assert "***" in line and line.split()[-1] == ".env"


def test_settings_inside_the_example_project(tmp_path):
    project = tmp_path / "example_project"
    shutil.copytree(
        ROOT / "example_project", project, ignore=shutil.ignore_patterns("__pycache__", ".scrapy")
    )
    env = command_env(
        SDI_API_URL="http://127.0.0.1:9/api/v1", SDI_USERNAME="demo", SDI_PASSWORD="project-s3cret"
    )
    proc = sdi(project, "settings", "--json", env=env, secret="project-s3cret")
    assert proc.returncode == 0, proc.stderr
    rows = {row["name"]: row for row in json.loads(proc.stdout)["settings"]}
    # demo/settings.py reads the environment into SDI_API_URL: the value comes from its settings
    assert (
        rows["SDI_API_URL"]["value"] == "http://127.0.0.1:9/api/v1"
        and rows["SDI_API_URL"]["source"] == "settings"
    )
    assert rows["SDI_PASSWORD"]["value"] == "***"
    assert (
        Path(rows["SDI_BUFFER_PATH"]["value"]).resolve()
        == (project / ".scrapy" / "sdi" / "buffer.db").resolve()
    )


# -- buffer, export, requeue --------------------------------------------------------------------


def _mixed_buffer(store: Store) -> dict[str, list[str]]:
    return {
        "pending": store.fill("alpha", urls(3)),
        "rejected": store.fill("beta", urls(2, "b"), REJECTED, "bad url"),
        "invalid": store.fill("beta", urls(1, "i"), INVALID, "no url"),
    }


@pytest.mark.smoke
def test_buffer_counts_by_state_and_crawler(tmp_path, store):
    _mixed_buffer(store)
    settings = store.settings
    proc = sdi(tmp_path, "buffer", "--json", settings=settings)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["counts"] == {
        "pending": 3,
        "in_flight": 0,
        "delivered": 0,
        "rejected": 2,
        "filtered": 0,
        "invalid": 1,
    }
    assert data["crawlers"]["alpha"]["pending"] == 3 and data["crawlers"]["beta"]["rejected"] == 2
    assert data["oldest_pending_age_seconds"] >= 0 and data["size_bytes"] > 0
    text = sdi(tmp_path, "buffer", settings=settings)
    assert text.returncode == 0 and "3 pending" in text.stdout
    assert any(line.split()[:2] == ["alpha", "3"] for line in text.stdout.splitlines()), text.stdout


def test_metrics_reads_the_buffer(tmp_path, store):
    _mixed_buffer(store)
    out = tmp_path / "sdi.prom"
    proc = sdi(tmp_path, "metrics", "--no-api", "--output", str(out), settings=store.settings)
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert 'sdi_buffer_rows{crawler="alpha",state="pending"} 3.0' in text, text
    assert 'sdi_buffer_rows{crawler="beta",state="rejected"} 2.0' in text, text
    size = next(line for line in text.splitlines() if line.startswith("sdi_buffer_size_bytes "))
    assert float(size.split()[1]) > 0
    assert 'sdi_buffer_oldest_pending_age_seconds{crawler="beta"} 0.0' in text


@pytest.mark.smoke
def test_export_csv_and_jsonl(tmp_path, store):
    ids = _mixed_buffer(store)
    settings = store.settings
    jsonl = sdi(
        tmp_path,
        "export",
        "--state",
        "pending",
        "--format",
        "jsonl",
        "--output",
        "-",
        settings=settings,
    )
    assert jsonl.returncode == 0, jsonl.stderr
    rows = [json.loads(line) for line in jsonl.stdout.splitlines()]
    assert [r["id"] for r in rows] == ids["pending"]
    assert rows[0]["result"]["url"] == urls(3)[0] and rows[0]["result"]["extra"] == {"n": 0}
    assert (
        rows[0]["crawler"] == "alpha"
        and rows[0]["state"] == "pending"
        and rows[0]["created_at"].endswith("Z")
    )
    out = tmp_path / "rejected.csv"
    proc = sdi(
        tmp_path,
        "export",
        "--state",
        "rejected",
        "--crawler",
        "beta",
        "--format",
        "csv",
        "--output",
        str(out),
        settings=settings,
    )
    assert proc.returncode == 0 and "exported 2 rejected rows" in proc.stderr
    table = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [r["id"] for r in table] == ids["rejected"]
    assert {r["reason"] for r in table} == {"bad url"} and {r["url"] for r in table} == set(
        urls(2, "b")
    )
    assert {
        "id",
        "crawler",
        "url",
        "state",
        "attempts",
        "reason",
        "last_error",
        "created_at",
        "delivered_at",
    } <= set(table[0])


@pytest.mark.smoke
def test_requeue_counts_and_unknown_ids_fail(tmp_path, store):
    ids = _mixed_buffer(store)
    settings = store.settings
    one = sdi(
        tmp_path,
        "requeue",
        "--state",
        "rejected",
        "--id",
        ids["rejected"][0],
        "--json",
        settings=settings,
    )
    assert one.returncode == 0 and json.loads(one.stdout)["requeued"] == 1
    after = store.states()
    assert after[ids["rejected"][0]] == PENDING and after[ids["rejected"][1]] == REJECTED
    rest = sdi(tmp_path, "requeue", "--state", "rejected", "--crawler", "beta", settings=settings)
    assert rest.returncode == 0 and "requeued 1 rejected rows" in rest.stdout
    unknown = sdi(
        tmp_path,
        "requeue",
        "--state",
        "invalid",
        "--id",
        ids["invalid"][0],
        "nope",
        "--json",
        settings=settings,
    )
    assert unknown.returncode == 1 and json.loads(unknown.stdout)["requeued"] == 1
    assert Counter(store.states().values()) == {PENDING: 6}


@pytest.mark.smoke
def test_invalid_rows_export_as_json_and_requeue_only_once_mapped_again(
    sdi_server, tmp_path, store
):
    """A crawl's bad items: exported as real JSON with their URLs, requeued only when they now map."""
    settings = store.command_settings(sdi_server)
    crawl = run_crawl(
        tmp_path, settings, {"rounds": 1, "kinds": "items"}, spider="BadResultsSpider"
    )
    good = {r["url"] for r in sdi_server.results()}
    assert crawl.returncode == 0 and crawl.stats["sdi/items_invalid"] == len(BAD_ITEMS), crawl.log[
        -2000:
    ]

    jsonl = sdi(tmp_path, "export", "--state", "invalid", "--format", "jsonl", settings=settings)
    assert jsonl.returncode == 0, jsonl.stderr
    rows = [json.loads(line) for line in jsonl.stdout.splitlines()]
    assert len(rows) == len(BAD_ITEMS) and all(isinstance(row["fields"], dict) for row in rows)
    by_url = {row["url"]: row for row in rows}
    assert by_url["ftp://files.example.com/0.mp3"]["fields"] == {
        "url": "ftp://files.example.com/0.mp3"
    }
    linked = next(row for row in rows if "link" in row["fields"])
    assert linked["fields"] == {"link": LINK_URL.format(i=0), "description": "linked 0"}
    (unserialisable,) = [
        row["fields"]["thing"]["$sdi_not_kept"] for row in rows if "thing" in row["fields"]
    ]
    assert (
        unserialisable["type"] == "object" and "not JSON-serializable" in unserialisable["reason"]
    )
    out = tmp_path / "invalid.csv"
    assert (
        sdi(
            tmp_path,
            "export",
            "--state",
            "invalid",
            "--format",
            "csv",
            "-o",
            str(out),
            settings=settings,
        ).returncode
        == 0
    )
    table = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [json.loads(r["fields"]) for r in table] == [row["fields"] for row in rows]

    still = sdi(tmp_path, "requeue", "--state", "invalid", "--json", settings=settings)
    assert still.returncode == 1 and json.loads(still.stdout)["still_invalid"] == len(BAD_ITEMS), (
        still.stdout
    )
    field_map = {**settings, "SDI_FIELD_MAP": json.dumps({"link": "url"})}
    fixed = sdi(tmp_path, "requeue", "--state", "invalid", "--json", settings=field_map)
    assert json.loads(fixed.stdout) == {
        "requeued": 1,
        "still_invalid": len(BAD_ITEMS) - 1,
        "state": "invalid",
        "ids_not_found": 0,
    }, fixed.stdout
    assert f"{len(BAD_ITEMS) - 1} invalid rows are still invalid" in fixed.stderr
    flush = sdi(tmp_path, "flush", settings=settings, secret=sdi_server.password)
    assert flush.returncode == 0, flush.stdout + flush.stderr
    stored = sdi_server.results()
    assert {r["url"] for r in stored} == good | {LINK_URL.format(i=0)} and len(stored) == len(
        good
    ) + 1
    assert next(r for r in stored if r["url"] == LINK_URL.format(i=0))["description"] == "linked 0"
    assert sdi_server.stats()["rejected"] == 0
    assert Counter(store.states().values()) == {
        DELIVERED: len(good) + 1,
        INVALID: len(BAD_ITEMS) - 1,
    }


# -- flush and status ---------------------------------------------------------------------------


@pytest.mark.smoke
def test_flush_delivers_what_a_crawl_left_pending(sdi_server, tmp_path, store):
    settings = store.command_settings(sdi_server)
    sdi_server.stop()
    crawl = run_crawl(tmp_path, {**settings, "SDI_CLOSE_TIMEOUT": 0.5}, {"n": 120})
    assert crawl.returncode == 0 and crawl.stats["sdi/pending_at_close"] == 120, crawl.log[-2000:]
    down = sdi(tmp_path, "flush", "--timeout", "0.5", settings=settings, secret=sdi_server.password)
    assert down.returncode == 1 and "120 left pending" in down.stdout, down.stdout + down.stderr
    assert "Connection refused" in down.stderr and "ERROR" not in down.stderr, down.stderr
    sdi_server.start()
    proc = sdi(tmp_path, "flush", "--json", settings=settings, secret=sdi_server.password)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads(proc.stdout)
    assert (
        summary["delivered"] == 120
        and sum(summary["left"].values()) == 0
        and not summary["interrupted"]
    )
    stored = sdi_server.results()
    assert len(stored) == 120 and len({r["url"] for r in stored}) == 120
    assert set(store.states().values()) == {DELIVERED}


def test_flush_one_crawler_then_status_shows_descriptions(sdi_server, tmp_path, store):
    settings = store.command_settings(sdi_server)
    store.fill("alpha", urls(4))
    other = store.fill("beta", urls(2, "b"))
    proc = sdi(
        tmp_path, "flush", "--crawler", "alpha", settings=settings, secret=sdi_server.password
    )
    assert proc.returncode == 0 and "4 delivered" in proc.stdout, proc.stdout + proc.stderr
    assert {store.states()[i] for i in other} == {PENDING}
    assert sdi_server.set_status(urls(4)[1], 2) == 1

    lookup = [urls(4)[0], urls(4)[1], "https://example.com/never.mp3"]
    table = sdi(tmp_path, "status", "--url", *lookup, settings=settings, secret=sdi_server.password)
    assert table.returncode == 0, table.stderr
    lines = {line.split()[0]: line for line in table.stdout.splitlines()[1:]}
    assert (
        "under_review" in lines[lookup[1]]
        and "Queued for analyst review" in lines[lookup[1]]
        and "alpha" in lines[lookup[1]]
    )
    assert "received" in lines[lookup[0]] and "Stored, not yet looked at" in lines[lookup[0]]
    assert "not_found" in lines[lookup[2]]

    (tmp_path / "urls.txt").write_text("# wanted\n" + lookup[1] + "\n\n")
    by_file = sdi(
        tmp_path,
        "status",
        "--urls-file",
        "urls.txt",
        "--json",
        settings=settings,
        secret=sdi_server.password,
    )
    (entry,) = json.loads(by_file.stdout)["results"]
    assert entry["status"] == "under_review" and entry["description"] == "Queued for analyst review"
    assert entry["submitted_at"].endswith("Z")

    totals = sdi(
        tmp_path,
        "status",
        "--crawler",
        "alpha",
        "--json",
        settings=settings,
        secret=sdi_server.password,
    )
    (crawler,) = json.loads(totals.stdout)["crawlers"]
    assert crawler["total"] == 4
    assert {s["status"]: (s["count"], s["description"]) for s in crawler["statuses"]} == {
        "received": (3, "Stored, not yet looked at"),
        "under_review": (1, "Queued for analyst review"),
    }


def _run_in_a_pty(command: list[str], cwd: Path, timeout: float = 60.0) -> tuple[int, str]:
    """Run ``command`` with a terminal (a pty) as stdin, stdout and stderr; return its exit code and all it wrote."""
    import pty
    import selectors

    master, terminal = pty.openpty()
    try:
        proc = subprocess.Popen(
            command, cwd=cwd, env=command_env(), stdin=terminal, stdout=terminal, stderr=terminal
        )
    finally:
        os.close(terminal)
    output = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(master, selectors.EVENT_READ)
        while True:
            assert selector.select(max(0.0, deadline - time.monotonic())), (
                f"no end within {timeout}s: {output!r}"
            )
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: every end of the terminal is closed
                chunk = b""
            if not chunk:
                break
            output += chunk
    os.close(master)
    return proc.wait(timeout), output.decode("utf-8", "replace")


def test_flush_shows_its_progress_bar_on_a_terminal(sdi_server, tmp_path):
    fill(tmp_path / "buffer.db", "alpha", urls(60))
    settings = settings_for(sdi_server, tmp_path, SDI_BATCH_SIZE="10", SDI_CONCURRENT_REQUESTS="1")
    code, seen = _run_in_a_pty(sdi_command("flush", settings=settings), tmp_path)
    assert code == 0, seen
    assert "flush: 100%" in seen and "60/60" in seen and "row/s" in seen, (
        seen
    )  # the bar, drawn to its end
    assert "flush: 60 delivered" in seen
    piped = sdi(tmp_path, "flush", settings=settings)  # not a terminal: the summary line only
    assert piped.returncode == 0 and "%" not in piped.stdout + piped.stderr


def _wait_for(condition, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.mark.smoke
def test_ctrl_c_during_flush_keeps_the_buffer_consistent(sdi_server_factory, tmp_path, store):
    server = sdi_server_factory(latency=0.5)
    ids = store.fill("alpha", urls(200))
    settings = store.command_settings(server, SDI_BATCH_SIZE="20", SDI_CONCURRENT_REQUESTS="2")
    proc = subprocess.Popen(
        sdi_command("flush", settings=settings),
        cwd=tmp_path,
        env=command_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_sigint_as_in_a_terminal,
    )
    try:
        posts = lambda: sum(server.stats()["requests"].get("/api/v1/crawler-results", {}).values())  # noqa: E731
        _wait_for(lambda: posts() > 0 or proc.poll() is not None, "the first batch")
        assert proc.poll() is None, "flush ended before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, out + err
    assert "Interrupted" in err and "Traceback" not in err and server.password not in out + err
    assert PASSWORD not in out + err
    after = store.states()
    stored = {r["id"] for r in server.results()}
    delivered = {i for i, state in after.items() if state == DELIVERED}
    assert set(after.values()) <= {
        PENDING,
        DELIVERED,
    }  # the batches in flight finished: none left leased
    assert (
        0 < len(delivered) < 200 and delivered == stored
    )  # nothing marked delivered the API does not have

    server.set_faults(latency=0)
    second = sdi(tmp_path, "flush", "--json", settings=settings, secret=server.password)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["delivered"] == 200 - len(delivered)
    by_id = Counter(r["id"] for r in server.results())
    assert set(by_id) == set(ids) and set(by_id.values()) == {1}


def test_second_ctrl_c_quits_at_once_and_leased_rows_come_back(sdi_server_factory, tmp_path, store):
    server = sdi_server_factory(latency=1.0)  # answers come after both Ctrl-Cs
    ids = store.fill("alpha", urls(100))
    settings = store.command_settings(
        server, SDI_BATCH_SIZE="20", SDI_TIMEOUT="2", SDI_LEASE_TIMEOUT="120"
    )
    proc = subprocess.Popen(
        sdi_command("flush", "--timeout", "30", settings=settings),
        cwd=tmp_path,
        env=command_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_sigint_as_in_a_terminal,
    )
    try:
        posts = lambda: sum(server.stats()["requests"].get("/api/v1/crawler-results", {}).values())  # noqa: E731
        _wait_for(lambda: posts() > 0 or proc.poll() is not None, "the first batch")
        proc.send_signal(signal.SIGINT)
        while "Interrupted" not in (line := proc.stderr.readline()):  # the first Ctrl-C was taken
            assert line, "flush ended without saying it was interrupted"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1 and "stay leased" in err, out + err
    assert PASSWORD not in out + err
    after = store.states()
    in_flight = {i for i, state in after.items() if state == IN_FLIGHT}
    delivered = {i for i, state in after.items() if state == DELIVERED}
    stored = {r["id"] for r in server.results()}
    assert delivered <= stored  # nothing marked delivered that the API does not have
    # The batches the API stored but whose answers the quit cut off; on a loaded machine a
    # claimed batch may not have been sent at all, so this can be fewer than the leased rows.
    unanswered = stored - delivered
    assert unanswered and unanswered <= in_flight

    server.set_faults(latency=0)
    # the quit process is dead: its leases are taken back at once, not after SDI_LEASE_TIMEOUT
    second = sdi(
        tmp_path, "flush", "--json", "--timeout", "10", settings=settings, secret=server.password
    )
    assert second.returncode == 0, second.stderr
    summary = json.loads(second.stdout)
    assert summary["delivered"] == 100 - len(delivered)
    assert summary["duplicates"] == len(
        unanswered
    )  # stored before the quit, resent under the same ids
    by_id = Counter(r["id"] for r in server.results())
    assert set(by_id) == set(ids) and set(by_id.values()) == {1}
