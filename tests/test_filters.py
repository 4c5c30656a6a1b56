"""Filter matching: the contract's table, case rules, skipped filters, RE2 and re agreeing."""

from __future__ import annotations

import fnmatch
import logging
import random
import re
from urllib.parse import urlsplit

import pytest

from scrapy_sdi import filters as sdi_filters
from scrapy_sdi.filters import Filter, compile_filters

ENGINES = [
    pytest.param(
        True, id="re2", marks=pytest.mark.skipif(sdi_filters.re2 is None, reason="no re2")
    ),
    pytest.param(False, id="re"),
]


@pytest.fixture(params=ENGINES)
def use_re2(request) -> bool:
    return request.param


def one(field: str, kind: str, pattern: object, fid: object = 1) -> dict:
    return {"id": fid, "field": field, "kind": kind, "pattern": pattern}


def matches(
    use_re2: bool, raw: dict, url: str = "https://other.test/x", filename: str = "x.bin"
) -> bool:
    return compile_filters([raw], use_re2=use_re2).match(url, filename) is not None


# --- the table, on each field ---------------------------------------------------------


@pytest.mark.parametrize(
    "kind, pattern, hit, miss",
    [
        ("exact", "report.pdf", "report.pdf", "report.pdf.bak"),
        ("prefix", "tmp_", "tmp_1.zip", "a_tmp_1.zip"),
        ("glob", "*.tmp", "a.tmp", "a.tmp.bak"),
        ("regex", r"\d{3}", "a123b", "a12b"),
    ],
)
def test_kinds_on_filename(use_re2, kind, pattern, hit, miss):
    raw = one("filename", kind, pattern)
    assert matches(use_re2, raw, filename=hit)
    assert not matches(use_re2, raw, filename=miss)


@pytest.mark.parametrize(
    "kind, pattern, hit, miss",
    [
        ("exact", "https://a.test/x", "https://a.test/x", "https://a.test/x?"),
        (
            "prefix",
            "https://a.test/private/",
            "https://a.test/private/1",
            "https://b.test/https://a.test/private/",
        ),
        ("domain", "example.org", "https://cdn.example.org/f", "https://example.org.evil.test/"),
        ("glob", "https://*.test/*.mp3", "https://a.test/b/c.mp3", "https://a.test/c.mp3?x"),
        ("regex", "/private/", "https://a.test/x/private/y", "https://a.test/privat/"),
    ],
)
def test_kinds_on_url(use_re2, kind, pattern, hit, miss):
    raw = one("url", kind, pattern)
    assert matches(use_re2, raw, url=hit)
    assert not matches(use_re2, raw, url=miss)


def test_a_filter_applies_to_its_own_field_only(use_re2):
    fs = compile_filters([one("filename", "exact", "same")], use_re2=use_re2)
    assert fs.match("same", "other") is None
    assert fs.match("other", "same") is not None


# --- case rules -----------------------------------------------------------------------


def test_exact_prefix_and_regex_are_case_sensitive(use_re2):
    assert not matches(use_re2, one("filename", "exact", "A.pdf"), filename="a.pdf")
    assert not matches(use_re2, one("filename", "prefix", "Tmp"), filename="tmp1")
    assert not matches(use_re2, one("filename", "regex", "Private"), filename="private")
    assert matches(use_re2, one("filename", "regex", "(?i)Private"), filename="PRIVATE")


def test_glob_and_domain_ignore_case(use_re2):
    assert matches(use_re2, one("filename", "glob", "*.TMP"), filename="Draft.tmp")
    assert matches(use_re2, one("filename", "glob", "*.tmp"), filename="DRAFT.TMP")
    assert matches(use_re2, one("url", "domain", "Example.ORG"), url="https://WWW.example.org/")


def test_glob_case_folding_of_non_ascii(use_re2):
    assert matches(use_re2, one("filename", "glob", "RÉSUMÉ*"), filename="résumé.pdf")
    assert matches(use_re2, one("filename", "glob", "[é]*"), filename="Été.txt")


def test_regexes_see_the_value_as_is_and_globs_lowercased_in_one_field(use_re2):
    # one RE2 filter holds both; a value with capitals must not let a regex see it lowercased
    raw = [one("filename", "regex", "draft", fid="r"), one("filename", "glob", "*draft*", fid="g")]
    fs = compile_filters(raw, use_re2=use_re2)
    assert fs.match("https://x.org/", "a-draft.tmp").id == "r"
    assert fs.match("https://x.org/", "A-Draft.tmp").id == "g"
    assert fs.match("https://x.org/", "a-dr.tmp") is None
    fs = compile_filters(
        [one("filename", "regex", "Dr", fid="r"), one("filename", "glob", "*.zip", fid="g")],
        use_re2=use_re2,
    )
    assert fs.match("https://x.org/", "Dr.txt").id == "r"
    assert fs.match("https://x.org/", "dr.txt") is None
    assert fs.match("https://x.org/", "DR.ZIP").id == "g"


# --- domains --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, expected",
    [
        ("https://example.org/", True),
        ("https://a.b.example.org/x", True),
        ("https://badexample.org/", False),
        ("https://example.org.evil.test/", False),
        ("https://example.com/example.org", False),
        ("https://user:pw@example.org:8443/x", True),
        ("https://example.org@evil.test/", False),
        ("https://evil.test/?next=https://example.org", False),
        ("https://www.example.org./", True),
        ("http://EXAMPLE.org:80", True),
        ("//example.org/path", True),
        ("mailto:someone@example.org", False),
        ("/relative/example.org", False),
        ("file:///example.org", False),
        ("https://[::1]:8080/", False),
        ("https://[::1/", False),
        ("", False),
    ],
)
def test_domain(use_re2, url, expected):
    assert matches(use_re2, one("url", "domain", "example.org"), url=url) is expected


def test_domain_pattern_with_trailing_dot_and_ipv6_host(use_re2):
    assert matches(use_re2, one("url", "domain", "example.org."), url="https://a.example.org/")
    assert matches(use_re2, one("url", "domain", "::1"), url="https://[::1]:8080/")


@pytest.mark.parametrize(
    "pattern, url",
    [
        ("bücher.example", "https://xn--bcher-kva.example/"),
        ("xn--bcher-kva.example", "https://bücher.example/"),
        ("BÜCHER.example", "https://www.Bücher.example:8080/"),
        ("bücher.example", "https://user@shop.bücher.example./x"),
        ("bücher.example", "https://b%C3%BCcher.example/"),
    ],
)
def test_domain_idn_and_punycode_match_each_other(use_re2, pattern, url):
    assert matches(use_re2, one("url", "domain", pattern), url=url)


def test_domain_idn_lookalike_does_not_match(use_re2):
    assert not matches(
        use_re2, one("url", "domain", "bücher.example"), url="https://bucher.example/"
    )
    assert not matches(
        use_re2, one("url", "domain", "bücher.example"), url="https://xbücher.example/"
    )


# --- regex and glob semantics ---------------------------------------------------------


def test_regex_is_search_not_match(use_re2):
    assert matches(use_re2, one("url", "regex", "private"), url="https://a.test/x/private")
    assert not matches(use_re2, one("url", "regex", "^private"), url="https://a.test/private")
    assert matches(use_re2, one("url", "regex", r"\.mp3$"), url="https://a.test/a.mp3")


@pytest.mark.parametrize(
    "pattern, value, expected",
    [
        (r"^\w+\.pdf$", "résumé.pdf", True),  # \w is Unicode in Python's re
        (r"^\d+$", "٣٤", True),  # Arabic-Indic digits are \d
        (r"^[^\W\d]+$", "Ωmega", True),
        (r"^a{,2}b$", "aab", True),  # {,n} is a repeat in Python, a literal elsewhere
        (r"^a{,2}b$", "a{,2}b", False),
        (r"x$", "x\n", True),  # $ also matches before a final newline
        (r"x\Z", "x\n", False),
        (r"(?i)^i$", "İ", True),  # Python's IGNORECASE equivalences, not RE2's
        (r"(?i)^[j-l]$", "\u212a", True),  # KELVIN SIGN is k
        (r"(?i)straße", "STRASSE", False),
        (r"\bcat\b", "a cat!", True),
        (r"\bcat\b", "concat", False),
        (r"(ab)\1", "xababx", True),
        (r"foo(?=bar)", "foobar", True),
        (r"foo(?!bar)", "foobar", False),
        (r"(?x) a b  # spaced", "ab", True),
        (r"(?s)a.b", "a\nb", True),
        (r"a.b", "a\nb", False),
        (r"(?m)^b$", "a\nb\nc", True),
        ("", "anything", True),
    ],
)
def test_regex_keeps_python_meaning(use_re2, pattern, value, expected):
    assert bool(re.search(pattern, value)) is expected  # the reference itself
    assert matches(use_re2, one("filename", "regex", pattern), filename=value) is expected


def test_values_re2_cannot_read_are_searched_with_re(use_re2):
    surrogate = "a\udcff.tmp"  # e.g. an undecodable file name
    assert matches(use_re2, one("filename", "regex", r"^a.\.tmp$"), filename=surrogate)
    assert matches(use_re2, one("filename", "glob", "A?.TMP"), filename=surrogate)


@pytest.mark.parametrize(
    "pattern, value, expected",
    [
        ("*.tmp", "dir/a.tmp", True),  # * crosses slashes, as fnmatch's does
        ("?.tmp", "ab.tmp", False),
        ("[!a]*", "abc", False),
        ("[a-c]x", "Bx", True),
        ("report", "report.pdf", False),  # the whole value
        ("*report*", "my-report.pdf", True),
        ("*", "", True),
        ("[]]", "]", True),
        ("*\n", "a\n", True),
    ],
)
def test_glob_matches_the_whole_value(use_re2, pattern, value, expected):
    assert matches(use_re2, one("filename", "glob", pattern), filename=value) is expected


def test_evil_regex_does_not_freeze_under_re2():
    if sdi_filters.re2 is None:
        pytest.skip("no re2")
    fs = compile_filters([one("url", "regex", r"(a+)+$", fid=7)])
    assert fs.unprotected == []  # RE2 takes it: otherwise the next line would never end
    assert fs.match("https://a.test/" + "a" * 5000 + "b", "f") is None
    assert fs.match("https://a.test/" + "a" * 5000, "f").id == 7


def test_unprotected_lists_filters_re2_cannot_take():
    if sdi_filters.re2 is None:
        pytest.skip("no re2")
    raw = [one("url", "regex", r"(a)\1", fid="backref"), one("url", "regex", "plain", fid="ok")]
    assert compile_filters(raw).unprotected == ["backref"]
    assert compile_filters(raw, use_re2=False).unprotected == []


# --- which filter, invalid filters, empty set -------------------------------------------


def test_first_match_is_the_first_listed_whatever_its_kind(use_re2):
    raw = [
        one("filename", "glob", "*.zip", fid="a"),
        one("url", "regex", "private", fid="b"),
        one("url", "domain", "example.org", fid="c"),
        one("filename", "exact", "x.zip", fid="d"),
    ]
    fs = compile_filters(raw, use_re2=use_re2)
    assert fs.match("https://example.org/private", "x.zip").id == "a"
    assert fs.match("https://example.org/private", "x.bin").id == "b"
    assert fs.match("https://example.org/", "x.bin").id == "c"
    fs = compile_filters(raw[::-1], use_re2=use_re2)
    assert fs.match("https://example.org/private", "x.zip").id == "d"


def test_describe():
    f = Filter(3, "url", "regex", "/private/")
    assert f.describe() == "filter 3 (url regex '/private/')"


def test_invalid_filters_are_skipped_with_one_warning_each(use_re2, caplog):
    raw = [
        one("url", "domain", "ok.test", fid=1),
        one("body", "exact", "x", fid=2),
        one("url", "fuzzy", "x", fid=3),
        one("url", "regex", "(unclosed", fid=4),
        one("filename", "domain", "example.org", fid=5),
        one("url", "prefix", 42, fid=6),
        one("url", "domain", ".", fid=7),
        "not an object",
        one("filename", "exact", "keep.me", fid=9),
    ]
    with caplog.at_level(logging.WARNING, logger="scrapy_sdi.filters"):
        fs = compile_filters(raw, "v1", use_re2=use_re2)
    assert fs.skipped == [2, 3, 4, 5, 6, 7, None]
    assert [f.id for f in fs.filters] == [1, 9]
    assert fs.count == 2 and fs.version == "v1"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 7
    for fid, why, record in zip(
        [2, 3, 4, 5, 6, 7, None],
        [
            "unknown field",
            "unknown kind",
            "invalid regex",
            "url field only",
            "not a string",
            "empty",
            "not an object",
        ],
        warnings,
        strict=True,
    ):
        assert f"filter {fid!r}" in record.getMessage()
        assert why in record.getMessage()
    assert fs.match("https://ok.test/", "x") is not None
    assert fs.match("https://x.test/", "keep.me") is not None


def test_empty_set(use_re2):
    fs = compile_filters([], "v0", use_re2=use_re2)
    assert fs.count == 0 and fs.skipped == [] and fs.version == "v0"
    assert fs.match("https://example.org/", "a.tmp") is None


# --- the compiled matcher against a naive reading of the contract ------------------------


def naive_first(raw: list[dict], url: str, filename: str):
    """The contract's table, one filter at a time, in list order."""
    for f in raw:
        field, kind, pattern = f["field"], f["kind"], f["pattern"]
        value = url if field == "url" else filename
        if kind == "exact":
            hit = value == pattern
        elif kind == "prefix":
            hit = value.startswith(pattern)
        elif kind == "domain":
            host, pattern = (urlsplit(url).hostname or "").rstrip("."), pattern.lower().rstrip(".")
            hit = bool(host) and (host == pattern or host.endswith("." + pattern))
        elif kind == "glob":
            hit = fnmatch.fnmatchcase(value.lower(), pattern.lower())
        else:
            hit = re.search(pattern, value) is not None
        if hit:
            return f["id"]
    return None


CHARS = [
    "a",
    "A",
    "b",
    "B",
    "k",
    "K",
    "i",
    "I",
    "s",
    "_",
    ".",
    "/",
    " ",
    "-",
    "1",
    "٣",
    "é",
    "É",
    "İ",
    "ı",
    "ſ",
    "\u212a",
    "ß",
    "Ω",
    "\n",
    "x",
]
REGEX_ATOMS = [
    "a",
    "b",
    "i",
    "k",
    "s",
    "1",
    r"\.",
    "/",
    "é",
    ".",
    r"\d",
    r"\w",
    r"\s",
    r"\W",
    r"\D",
    "[a-c]",
    "[^a]",
    "[A-Z_]",
    "[é-ü]",
    "^",
    "$",
    r"\A",
    r"\Z",
    r"\b",
    "(?i:k)",
    "(?i:[a-k])",
    "(?i:[^s])",
    "(a|b)",
    "(?:ab|)",
    "ſ",
]
QUANTIFIERS = ["", "", "", "*", "+", "?", "{,2}", "{1,3}", "*?", "{2}"]
GLOB_ATOMS = ["a", "B", "k", "i", "é", "Ω", ".", "/", "*", "?", "[a-c]", "[!a]", "[]a]", "ſ", "İ"]


def random_regex(rng: random.Random) -> str:
    body = "".join(
        rng.choice(REGEX_ATOMS) + rng.choice(QUANTIFIERS) for _ in range(rng.randint(1, 4))
    )
    body = body.replace("^*", "^").replace("$*", "$")
    if rng.random() < 0.1:
        body = f"(a)[bk]?{body}\\1"  # a backreference: Python's re only
    return rng.choice(["", "", "", "(?i)", "(?s)", "(?m)"]) + body


def random_filter(rng: random.Random, fid: int) -> dict:
    kind = rng.choice(["exact", "prefix", "domain", "glob", "regex", "regex", "regex"])
    field = "url" if kind == "domain" else rng.choice(["url", "filename"])
    if kind == "domain":
        pattern = rng.choice(["a.test", "b.a.test", "test", "ab.test", "A.Test."])
    elif kind == "glob":
        pattern = "".join(rng.choice(GLOB_ATOMS) for _ in range(rng.randint(1, 4)))
    elif kind == "regex":
        pattern = random_regex(rng)
    else:
        pattern = random_text(rng, 3)
    return one(field, kind, pattern, fid=fid)


def random_text(rng: random.Random, most: int) -> str:
    return "".join(rng.choice(CHARS) for _ in range(rng.randint(0, most)))


def random_result(rng: random.Random) -> tuple[str, str]:
    host = rng.choice(["a.test", "b.a.test", "ab.test", "A.TEST", "x.test", "test", "a.test."])
    url = f"{rng.choice(['https', 'http'])}://{host}/{random_text(rng, 6)}"
    return rng.choice([url, random_text(rng, 6)]), random_text(rng, 6)


@pytest.mark.parametrize("seed", range(8))
def test_compiled_matcher_agrees_with_the_naive_table(use_re2, seed):
    rng = random.Random(seed)
    raw = [random_filter(rng, fid) for fid in range(rng.randint(1, 40))]
    raw = [f for f in raw if _valid_regex(f) and not _matches_nearly_all(f)]
    fs = compile_filters(raw, use_re2=use_re2)
    assert fs.skipped == []
    for _ in range(400):
        url, filename = random_result(rng)
        found = fs.match(url, filename)
        assert (found.id if found else None) == naive_first(raw, url, filename), (url, filename)


def test_each_random_regex_agrees_with_re_one_by_one(use_re2):
    rng = random.Random(99)
    values = [random_text(rng, 8) for _ in range(300)]
    for _ in range(300):
        pattern = random_regex(rng)
        if not _valid_regex(one("filename", "regex", pattern)):
            continue
        fs = compile_filters([one("filename", "regex", pattern)], use_re2=use_re2)
        for value in values:
            assert (fs.match("u", value) is not None) is (re.search(pattern, value) is not None), (
                pattern,
                value,
            )


def _matches_nearly_all(f: dict) -> bool:
    """A regex matching "" or one common char would hide every later filter."""
    return f["kind"] == "regex" and any(re.search(f["pattern"], v) for v in ["", "a", "/", "é"])


def _valid_regex(f: dict) -> bool:
    if f["kind"] != "regex":
        return True
    try:
        re.compile(f["pattern"])
    except re.error:
        return False
    return True
