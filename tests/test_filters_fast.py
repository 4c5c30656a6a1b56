"""The filters' fast paths give what the definitions give, for values built to break them."""

from __future__ import annotations

import fnmatch
import re
from urllib.parse import unquote, urlsplit

from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from scrapy_sdi import filters as sdi_filters

_SCHEMES = st.sampled_from(["https", "http", "HTTP", "ftp", "h+t.p-s", "1http", "", "ht tp"])
#: What an authority may hold, and the characters urlsplit() treats specially.
_AUTHORITY_CHARS = st.sampled_from(
    list("aZ09.-_~")
    + ["@", ":", "[", "]", "%", "%41", "%2e", "\t", "\n", "\r", " ", "é", "ß"]
    + ["\x00", "\x1f", "\u3002", "xn--", "A.B", "..", "::1", "?", "#", "/", "\\"]
)
_REST = st.sampled_from(["", "/", "/p/a.mp3", "?q=1", "#f", "/\tx", " ", "\n", ".", "/%20"])


@st.composite
def urls(draw: st.DrawFn) -> str:
    authority = "".join(draw(st.lists(_AUTHORITY_CHARS, max_size=8)))
    lead = draw(st.sampled_from(["", "", " ", "\t", "\x00"]))
    sep = draw(st.sampled_from(["://", "://", ":/", ":", "//"]))
    return f"{lead}{draw(_SCHEMES)}{sep}{authority}{draw(_REST)}"


def _reference_host(url: str) -> str:
    """The definition: urlsplit's hostname, unescaped, in the filters' comparable form."""
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return ""
    if "%" in host:
        host = unquote(host)
    return sdi_filters._normalize_host(host) if host else ""


@settings(max_examples=3000, deadline=None, database=None)
@given(urls())
@example("https://WWW.Example.COM./a")
@example("https://example.com")
@example("https://example.com\t.evil/")
@example("https://a.b@example.com/")
@example("https://example.com:8080/")
@example("https://...")
@example("https://]/")
@example("https://[zz]/")
@example("https://[::1]:8080/")
@example("https://a]b@example.com/")
def test_the_host_a_domain_filter_sees_is_urlsplits(url: str) -> None:
    assert sdi_filters._url_host(url) == _reference_host(url)


def test_a_host_urlsplit_refuses_is_no_host_for_domain_filters() -> None:
    """urlsplit refuses an unmatched bracket: the naive table sees no host, so no domain."""
    fs = sdi_filters.compile_filters([{"id": 1, "field": "url", "kind": "domain", "pattern": "]"}])
    assert fs.match("https://]/a.mp3", "a.mp3") is None


# -- one RE2 call for both fields: a pattern matches in its own field only -----------------------

_ATOMS = st.sampled_from(
    ["a", "b", "A", "/", ".", "é", "İ", r"\n", "[\n]", "[^a]", "[^\n]", r"\s", r"\S", r"\d"]
    + [r"\D", r"\w", r"\W", "[\\s\\d]", "[\\x00-\\x7f]", "[^\\W]", "(?i:\n)", "(?i:[^b])", "."]
    + ["(?s:.)", "^", "$", r"\A", r"\Z", "(?m:^)", "(a|)", "(?:b|\\n)"]
)
_QUANTIFIERS = st.sampled_from(["", "", "*", "+", "?", "{2}", "{0,2}", "*?"])
_regexes = st.lists(st.tuples(_ATOMS, _QUANTIFIERS), min_size=1, max_size=4).map(
    lambda parts: "".join(atom + q for atom, q in parts).replace("^*", "^").replace("$*", "$")
)
_values = st.text(alphabet=st.sampled_from(list("abAB/. éİ1\t") + ["\n", "\ud800"]), max_size=6)


def _valid(pattern: str) -> bool:
    try:
        re.compile(pattern)
    except re.error:
        return False
    return True


@settings(max_examples=3000, deadline=None, database=None)
@given(
    st.sampled_from(["url", "filename"]),
    st.sampled_from(["regex", "glob", "prefix"]),
    _regexes,
    _values,
    _values,
)
def test_a_pattern_matches_in_its_own_field_only(
    field: str, kind: str, pattern: str, url: str, filename: str
) -> None:
    if kind == "regex":
        assume(_valid(pattern))
    raw = [{"id": 1, "field": field, "kind": kind, "pattern": pattern}]
    value = url if field == "url" else filename
    if kind == "regex":
        expected = re.search(pattern, value) is not None
    elif kind == "glob":
        expected = fnmatch.fnmatchcase(value.lower(), pattern.lower())
    else:
        expected = value.startswith(pattern)
    for use_re2 in (True, False):
        fs = sdi_filters.compile_filters(raw, use_re2=use_re2)
        assert (fs.match(url, filename) is not None) is expected, (use_re2, fs.unprotected)


@settings(max_examples=1500, deadline=None, database=None)
@given(
    st.lists(st.tuples(st.sampled_from(["url", "filename"]), _regexes), max_size=6),
    _values,
    _values,
)
def test_the_first_listed_of_both_fields_is_found(
    patterns: list[tuple[str, str]], url: str, filename: str
) -> None:
    raw = [
        {"id": n, "field": field, "kind": "regex", "pattern": pattern}
        for n, (field, pattern) in enumerate(patterns)
        if _valid(pattern)
    ]
    expected = next(
        (
            f["id"]
            for f in raw
            if re.search(f["pattern"], url if f["field"] == "url" else filename) is not None
        ),
        None,
    )
    found = sdi_filters.compile_filters(raw).match(url, filename)
    assert (found.id if found else None) == expected
