"""Every sdi/ stats key the package names is documented in scrapy_sdi.stats.STATS, and only those.

The package's sources are read as Python (``ast``): every string literal and f-string is searched
for ``sdi/…`` keys; an f-string's formatted part, a ``<name>`` and a ``*`` are all one wildcard,
so ``f"sdi/items_filtered/{field}"`` is the table's ``sdi/items_filtered/<field>``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import scrapy_sdi
from scrapy_sdi.stats import STATS

PACKAGE = Path(scrapy_sdi.__file__).resolve().parent
_PART = r"(?:[a-z0-9_]+|<[^<>\s]*>|\*)"
# Not inside a path (".scrapy/sdi/buffer.db"), and not a file name itself ("sdi/buffer.db").
KEY = re.compile(rf"(?<![\w/.])sdi/{_PART}(?:/{_PART})*(?![\w*<>]|\.\w)")
WILDCARD = "<*>"


def _normalised(key: str) -> str:
    return re.sub(r"<[^<>]*>|\*", WILDCARD, key)


def _strings(tree: ast.AST) -> list[str]:
    """Every string literal, an f-string as one string with its formatted parts as wildcards."""
    parts_of_fstrings = set()
    texts = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            parts_of_fstrings.update(id(value) for value in node.values)
            texts.append(
                "".join(v.value if isinstance(v, ast.Constant) else WILDCARD for v in node.values)
            )
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in parts_of_fstrings
        ):
            texts.append(node.value)
    return texts


def keys_named_in(source: str) -> set[str]:
    return {_normalised(key) for text in _strings(ast.parse(source)) for key in KEY.findall(text)}


def keys_in_package() -> dict[str, list[str]]:
    """key -> the modules naming it."""
    found: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "stats.py" and path.parent == PACKAGE:
            continue  # the table itself
        for key in keys_named_in(path.read_text(encoding="utf-8")):
            found.setdefault(key, []).append(str(path.relative_to(PACKAGE)))
    return found


def test_the_scan_reads_literals_fstrings_and_mentions_but_not_paths():
    source = '''
stats.inc_value("sdi/items_buffered")
stats.inc_value(f"sdi/items_filtered/{matched.field}")
log(f"sdi/batches_sent = {stats.get_value('sdi/batches_failed')}")
"""Sets sdi/remote_status/<name>; see also (sdi/auth/*)."""
PATH = "sdi/buffer.db"
OTHER = ".scrapy/sdi/buffer"
'''
    assert keys_named_in(source) == {
        "sdi/items_buffered",
        "sdi/items_filtered/<*>",
        "sdi/batches_sent",
        "sdi/batches_failed",
        "sdi/remote_status/<*>",
        "sdi/auth/<*>",
    }


def test_every_stats_key_the_package_names_is_in_the_table():
    documented = {_normalised(key) for key in STATS}
    undocumented = {key: where for key, where in keys_in_package().items() if key not in documented}
    assert not undocumented, f"add these to scrapy_sdi/stats.py's STATS: {undocumented}"


def test_every_entry_of_the_table_is_used():
    used = set(keys_in_package())
    unused = [key for key in STATS if _normalised(key) not in used]
    assert not unused, f"no module of scrapy_sdi names these STATS entries: {unused}"


def test_the_table_is_well_formed():
    assert all(KEY.fullmatch(key) and meaning.strip() for key, meaning in STATS.items())
    assert len({_normalised(key) for key in STATS}) == len(STATS)
