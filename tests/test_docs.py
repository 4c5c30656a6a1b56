"""The README tells the truth about the settings."""

from __future__ import annotations

from pathlib import Path

from scrapy_sdi.settings import SPEC

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def test_every_setting_is_in_the_readme_table():
    missing = [name for name in SPEC if f"| `{name}` |" not in README]
    assert not missing


def test_the_readme_names_the_two_commands():
    assert "python3 dev.py demo" in README and "python3 dev.py test" in README
