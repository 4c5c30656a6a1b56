"""The docs tell the truth: the site builds strictly, and its reference pages are the code's tables."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

from scrapy_sdi.settings import SPEC
from scrapy_sdi.stats import STATS

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_the_site_builds_in_strict_mode(tmp_path):
    # strict: a broken link, a page left out of the nav or a stale generated page fails the build
    built = _run("-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site"))
    assert built.returncode == 0, built.stderr
    pages = {path.parent.name for path in (tmp_path / "site").glob("*/index.html")}
    assert {
        "settings",
        "stats",
        "commands",
        "delivery",
        "scaling",
        "contract",
        "dashboard",
        "monitoring",
        "testing",
        "reliability",
        "performance",
        "metrics",
    } <= pages
    assert (tmp_path / "site" / "openapi.yaml").is_file()
    settings_html = (tmp_path / "site" / "settings" / "index.html").read_text(encoding="utf-8")
    assert all(name in settings_html for name in SPEC)


def test_the_generated_pages_are_up_to_date():
    checked = _run(str(DOCS / "gen_reference.py"), "--check")
    assert checked.returncode == 0, checked.stdout


def test_a_stale_generated_page_fails_the_strict_build(tmp_path):
    copy = tmp_path / "repo"
    copy.mkdir()
    (copy / "mkdocs.yml").write_text(
        (ROOT / "mkdocs.yml").read_text(encoding="utf-8"), encoding="utf-8"
    )
    shutil.copytree(DOCS, copy / "docs")
    (copy / "docs" / "stats.md").write_text("# Stats\n\nan old table\n", encoding="utf-8")
    # the hook finds the package through the copy's docs/../ first: point it at this checkout
    (copy / "scrapy_sdi").symlink_to(ROOT / "scrapy_sdi")
    built = _run(
        "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site"), cwd=copy
    )
    assert built.returncode != 0
    assert (
        "docs/stats.md is out of date with the code: run python docs/gen_reference.py"
        in built.stderr
    )


def test_every_setting_and_stats_key_is_on_its_page():
    settings_page = (DOCS / "settings.md").read_text(encoding="utf-8")
    stats_page = (DOCS / "stats.md").read_text(encoding="utf-8")
    assert [name for name in SPEC if f"| `{name}` |" not in settings_page] == []
    assert [key for key in STATS if f"| `{key}` |" not in stats_page] == []


def test_the_settings_page_shows_types_with_their_ranges():
    page = (DOCS / "settings.md").read_text(encoding="utf-8")
    assert "| `SDI_BATCH_SIZE` | int\u00a01–1000 | `1000` |" in page
    assert "| `SDI_MONITOR_MAX_REJECTED_RATIO` | float\u00a00–1 | `0.05` |" in page
    assert "| `SDI_TIMEOUT` | float\u00a0≥\u00a00.1 | `30.0` |" in page
    assert "| `SDI_API_URL` | str | (required) |" in page


def test_the_readme_links_only_to_pages_that_exist():
    targets = re.findall(r"\]\((docs/[^)#]+)", README)
    assert targets and [t for t in targets if not (ROOT / t).is_file()] == []


def test_the_readme_names_the_two_commands():
    assert "python3 dev.py demo" in README and "python3 dev.py test" in README


def test_the_commands_page_shows_every_action_with_its_options():
    from scrapy_sdi.commands.sdi import ACTIONS

    page = (DOCS / "commands.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `scrapy sdi (\w+)([^`]*)` \|", page, re.MULTILINE))
    assert set(rows) == set(ACTIONS)
    for name, action in ACTIONS.items():
        if action.passthrough:  # the dashboard parses its own options
            continue
        parser = argparse.ArgumentParser(add_help=False)
        action.add_arguments(parser)
        options = set(re.findall(r"--[\w-]+", parser.format_usage()))
        options |= {"--json"} if action.json else set()
        shown = set(re.findall(r"--[\w-]+", rows[name]))
        assert shown == options, name
