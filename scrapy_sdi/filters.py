"""Matching of crawl results against the filters the SDI API publishes.

A result whose ``url`` or ``filename`` matches any filter must never be submitted
(contract, section "Filters"). Lists are long, so each kind is matched in (roughly)
constant time per value, however many filters it holds:

* ``exact`` and ``domain``: dictionary look-ups (a host and each of its parents);
* ``prefix``, ``glob``, ``regex``: one combined matcher (globs see the lowercased value,
  the others the value as is). With google-re2 installed that is one ``re2.Filter`` for both
  fields, searching ``url + "\\n" + filename`` with patterns confined to their part
  (FilteredRE2: an RE2 set of the literal "atoms" every pattern needs picks the few
  patterns worth running, each in linear time, so an evil regex from the API cannot
  freeze a crawl). A plain ``re2.Set`` was measured 40x slower on 1,000 globs like
  ``*word*.tmp``: its DFA states multiply. Patterns RE2 cannot take with Python's
  exact meaning (backreferences, lookarounds, ``\\b``, ...) are searched with :mod:`re`.

RE2 patterns are not the API's text: they are rebuilt from Python's own parse of each
pattern, so ``\\d``, ``\\w``, ``\\s``, ``{,n}`` and ``(?i)`` keep Python's meaning.
Values holding a newline or a lone surrogate are always searched with :mod:`re`.

When several filters match, :meth:`FilterSet.match` returns the one listed first
by the API, whatever its kind.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import logging
import re
import sys
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import idna

try:
    import re2
except ImportError:  # pragma: no cover - depends on the environment
    re2 = None

if sys.version_info >= (3, 11):
    from re import _parser as _sre_parse
else:  # pragma: no cover - Python 3.10
    import sre_parse as _sre_parse

if TYPE_CHECKING:
    from scrapy.statscollectors import StatsCollector

logger = logging.getLogger(__name__)

FIELDS = ("url", "filename")
KINDS = ("exact", "prefix", "domain", "glob", "regex")

#: RE2 rejects counted repetitions above this.
_RE2_MAX_REPEAT = 1000
#: RE2's memory budget per pattern (its default, 8 MB, is short for a few \\w classes).
_RE2_MAX_MEM = 64 << 20
_RE2_FLAGS = re.IGNORECASE | re.MULTILINE | re.DOTALL | re.UNICODE | re.VERBOSE


@dataclass(frozen=True, slots=True)
class Filter:
    """One usable filter, as published by the API."""

    id: object
    field: str
    kind: str
    pattern: str

    def describe(self) -> str:
        """Say which filter this is, e.g. for a DropItem message."""
        return f"filter {self.id} ({self.field} {self.kind} {self.pattern!r})"


class FilterSet:
    """The usable filters of one list, compiled for fast matching."""

    def __init__(
        self,
        filters: list[Filter],
        version: str | None = None,
        skipped: list[object] | None = None,
        *,
        use_re2: bool = True,
    ) -> None:
        self.version = version
        self.filters = tuple(filters)
        self.skipped = list(skipped or ())
        use_re2 = use_re2 and re2 is not None
        self._url = _FieldMatcher(self.filters, "url")
        self._filename = _FieldMatcher(self.filters, "filename")
        self._searcher = None
        if self._url.searched or self._filename.searched:
            self._searcher = _Searcher(self._url.searched, self._filename.searched, use_re2)
        #: ids of prefix/glob/regex filters searched with Python's re although RE2 is in
        #: use (backreferences, lookarounds, ``\\b``...): no protection from slow regexes.
        positions = self._searcher.unprotected if use_re2 and self._searcher else []
        self.unprotected = [self.filters[pos].id for pos in positions]
        #: Names these filters: a row remembers the key it passed, and is matched again only when
        #: the key in force differs. The API's version when it gives one, else a digest of the list.
        self.key = version if version is not None else _digest(self.filters)

    @property
    def count(self) -> int:
        """Number of usable filters."""
        return len(self.filters)

    def match(self, url: str, filename: str) -> Filter | None:
        """Return the first listed filter that the result matches, or None."""
        if not self.filters:
            return None
        pos = self._url.first(url)
        other = self._filename.first(filename)
        if other is not None and (pos is None or other < pos):
            pos = other
        if self._searcher is not None:
            other = self._searcher.first(url, filename)
            if other is not None and (pos is None or other < pos):
                pos = other
        return None if pos is None else self.filters[pos]

    def __repr__(self) -> str:
        return (
            f"<FilterSet version={self.version!r} count={self.count} skipped={len(self.skipped)}>"
        )


def count_filtered(stats: StatsCollector, excluded: Iterable[Filter]) -> None:
    """``sdi/items_filtered`` and ``sdi/items_filtered/<field>``: one count wherever a result is excluded."""
    for field, n in Counter(f.field for f in excluded).items():
        stats.inc_value("sdi/items_filtered", n)
        stats.inc_value(f"sdi/items_filtered/{field}", n)


def compile_filters(
    raw: Iterable[Mapping], version: str | None = None, *, use_re2: bool = True
) -> FilterSet:
    """Build a FilterSet, skipping (with one warning each) filters that cannot apply.

    ``use_re2=False`` forces Python's :mod:`re` for everything (tests, debugging).
    """
    filters: list[Filter] = []
    skipped: list[object] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. re's FutureWarning "possible nested set"
        for index, entry in enumerate(raw):
            fid = entry.get("id") if isinstance(entry, Mapping) else None
            reason = _invalid_reason(entry)
            if reason:
                logger.warning(
                    "Ignoring SDI filter %(id)r (entry %(index)d): %(reason)s",
                    {"id": fid, "index": index, "reason": reason},
                )
                skipped.append(fid)
                continue
            filters.append(Filter(fid, entry["field"], entry["kind"], entry["pattern"]))
        return FilterSet(filters, version, skipped, use_re2=use_re2)


def _digest(filters: tuple[Filter, ...]) -> str:
    """A key for a list the API sent without a version: equal lists, equal keys."""
    text = repr([(f.id, f.field, f.kind, f.pattern) for f in filters]).encode(
        "utf-8", "surrogatepass"
    )
    return "sha256:" + hashlib.sha256(text).hexdigest()[:16]


def _invalid_reason(entry: object) -> str | None:
    """Why this raw filter cannot apply, or None if it can."""
    if not isinstance(entry, Mapping):
        return f"not an object: {entry!r}"
    field, kind, pattern = entry.get("field"), entry.get("kind"), entry.get("pattern")
    if field not in FIELDS:
        return f"unknown field {field!r} (expected one of {', '.join(FIELDS)})"
    if kind not in KINDS:
        return f"unknown kind {kind!r} (expected one of {', '.join(KINDS)})"
    if not isinstance(pattern, str):
        return f"pattern is not a string: {pattern!r}"
    if kind == "domain" and field != "url":
        return "kind 'domain' applies to the url field only"
    if kind == "domain" and not _normalize_host(pattern):
        return "empty domain"
    if kind == "regex":
        try:
            re.compile(pattern)
        except (re.error, OverflowError, RecursionError, ValueError) as exc:
            return f"invalid regex: {exc}"
    return None


# --- one field ---------------------------------------------------------------------


class _FieldMatcher:
    """The exact and domain filters of one field, and the rest it leaves to the _Searcher."""

    def __init__(self, filters: tuple[Filter, ...], field: str) -> None:
        self._exact: dict[str, int] = {}
        domains: dict[str, int] = {}
        #: (position, regex, searched lowercased): prefix, glob and regex filters.
        self.searched: list[tuple[int, str, bool]] = []
        for pos, f in enumerate(filters):
            if f.field != field:
                continue
            if f.kind == "exact":
                self._exact.setdefault(f.pattern, pos)
            elif f.kind == "domain":
                domains.setdefault(_normalize_host(f.pattern), pos)
            elif f.kind == "prefix":
                self.searched.append((pos, r"\A" + re.escape(f.pattern), False))
            elif f.kind == "regex":
                self.searched.append((pos, f.pattern, False))
            else:  # glob, searched in the lowercased value
                self.searched.append((pos, r"\A" + fnmatch.translate(f.pattern.lower()), True))
        self._domains = domains or None

    def first(self, value: str) -> int | None:
        best = self._exact.get(value) if self._exact else None
        if self._domains is not None:
            pos = _first_domain(self._domains, value)
            if pos is not None and (best is None or pos < best):
                best = pos
        return best


def _first_domain(domains: dict[str, int], url: str) -> int | None:
    """Lowest position among domain filters naming the URL's host or a parent of it."""
    host = _url_host(url)
    best = None
    while host:
        pos = domains.get(host)
        if pos is not None and (best is None or pos < best):
            best = pos
        host = host.partition(".")[2]
    return best


#: Scheme and authority of an ordinary URL, split as urlsplit() would split them.
_AUTHORITY = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://([^/?#]*)")
#: The common case: an authority that is a plain ASCII host (no user, port, brackets, escapes
#: or whitespace), which urlsplit() would give as it is, lowercased.
_PLAIN_HOST = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://([A-Za-z0-9.-]+)(?:[/?#]|\Z)")


def _url_host(url: str) -> str:
    """The URL's host in comparable form, '' if it has none.

    Same answer as ``urlsplit(url).hostname``, which is only asked for unusual URLs
    (it is the slowest step of a check).
    """
    m = _PLAIN_HOST.match(url)
    if m:
        return m.group(1).rstrip(".").lower()
    m = _AUTHORITY.match(url)
    authority = m.group(1) if m else "["
    if (
        "[" not in authority  # urlsplit checks brackets (IPv6) its own way, by version
        and "]" not in authority
        and url[0] > " "
        and "\t" not in url
        and "\r" not in url
        and "\n" not in url
    ):
        host = authority.rpartition("@")[2].partition(":")[0]
    else:
        try:
            host = urlsplit(url).hostname or ""
        except ValueError:  # e.g. an unclosed IPv6 bracket
            return ""
    if "%" in host:
        host = unquote(host)
    return _normalize_host(host) if host else ""


def _normalize_host(host: str) -> str:
    """Lowercase ASCII (IDNA) form without trailing dots, for hosts and patterns alike."""
    host = host.rstrip(".")
    if host.isascii():
        return host.lower()
    try:
        return idna.encode(host, uts46=True).decode("ascii").lower()
    except (idna.IDNAError, UnicodeError, ValueError):
        return ".".join(_punycode_label(label) for label in host.split("."))


def _punycode_label(label: str) -> str:
    label = label.lower()
    return label if label.isascii() else "xn--" + label.encode("punycode").decode("ascii")


# --- combined regexes ----------------------------------------------------------------


class _Searcher:
    """The prefix, glob and regex filters of both fields; answers the lowest matching position.

    Globs are searched in the lowercased value, the others in the value as is. With RE2, one
    filter holds the patterns of both fields and searches ``url + "\\n" + filename`` at once: a
    call costs about half a microsecond whatever it holds. Each pattern is rewritten to match
    within its own field's part only (no class takes the newline, and ``^``/``$`` are the part's
    ends), which is exact because values with a newline never reach RE2. Most values are
    already lowercase, so one call answers for every pattern; otherwise the lowercased text is
    searched too.
    """

    def __init__(
        self,
        url: list[tuple[int, str, bool]],
        filename: list[tuple[int, str, bool]],
        use_re2: bool,
    ) -> None:
        on_url = [(pos, re.compile(source), lowered) for pos, source, lowered in url]
        on_filename = [(pos, re.compile(source), lowered) for pos, source, lowered in filename]
        #: Every pattern, searched with Python's re: for values RE2 cannot read.
        self._python_url, self._python_filename = _python_banks(on_url), _python_banks(on_filename)
        #: What RE2 does not search (all of it without RE2).
        self._rest_url, self._rest_filename = self._python_url, self._python_filename
        self._url_lowered = any(lowered for _pos, _source, lowered in url)
        self._filename_lowered = any(lowered for _pos, _source, lowered in filename)
        self._re2_match: Callable[[bytes, bool], list[int] | None] | None = None
        self._all_in_re2 = False
        self._positions: list[int] = []  # by RE2 index: the filter's position
        self._lowered: list[bool] = []  # by RE2 index: searched in the lowercased value
        self._on_url: list[bool] = []  # by RE2 index: a url filter (else a filename one)
        if use_re2:
            self._build_re2(on_url, on_filename)

    @property
    def unprotected(self) -> list[int]:
        """Positions of the filters RE2 does not search."""
        banks = (*self._rest_url, *self._rest_filename)
        return sorted(pos for bank in banks for pos, _rx in bank.entries)

    def _build_re2(
        self,
        on_url: list[tuple[int, re.Pattern[str], bool]],
        on_filename: list[tuple[int, re.Pattern[str], bool]],
    ) -> None:
        options = re2.Options()
        options.max_mem = _RE2_MAX_MEM
        options.log_errors = False
        options.never_capture = True
        rfilter = re2.Filter()
        for region, compiled in (("head", on_url), ("tail", on_filename)):
            for pos, rx, lowered in compiled:
                try:  # fnmatch's atomic groups never change what a glob matches
                    rfilter.Add(_to_re2(rx.pattern, atomic_ok=lowered, region=region), options)
                except (_Untranslatable, re2.error, RecursionError):
                    continue
                self._positions.append(pos)
                self._lowered.append(lowered)
                self._on_url.append(region == "head")
        if not self._positions:
            return
        rfilter.Compile()
        # The extension's own Match(text, potential), without the wrapper's frame: a fifth of
        # a call's cost. It answers [] where the wrapper answers None.
        inner = getattr(rfilter, "_filter", None)
        self._re2_match = getattr(inner, "Match", None) or rfilter.Match
        in_re2 = set(self._positions)
        self._rest_url = _python_banks([entry for entry in on_url if entry[0] not in in_re2])
        self._rest_filename = _python_banks(
            [entry for entry in on_filename if entry[0] not in in_re2]
        )
        self._all_in_re2 = not any(bank.entries for bank in (*self._rest_url, *self._rest_filename))

    def first(self, url: str, filename: str) -> int | None:
        url_lowered = url.lower() if self._url_lowered else url
        filename_lowered = filename.lower() if self._filename_lowered else filename
        match = self._re2_match
        if match is None:
            best = _first_of(self._python_url, url, url_lowered, None)
            return _first_of(self._python_filename, filename, filename_lowered, best)
        if "\n" in url or "\n" in filename:
            return self._first_apart(url, filename, url_lowered, filename_lowered)
        try:
            data = (url + "\n" + filename).encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: RE2 reads valid UTF-8 only
            return self._first_apart(url, filename, url_lowered, filename_lowered)
        positions = self._positions
        if url_lowered == url and filename_lowered == filename:
            hits = match(data, False)
            best = min(map(positions.__getitem__, hits)) if hits else None
        else:
            lowered_data = (url_lowered + "\n" + filename_lowered).encode("utf-8")
            is_lowered = self._lowered
            found = [positions[i] for i in match(data, False) or () if not is_lowered[i]]
            found += [positions[i] for i in match(lowered_data, False) or () if is_lowered[i]]
            best = min(found) if found else None
        if self._all_in_re2:
            return best
        best = _first_of(self._rest_url, url, url_lowered, best)
        return _first_of(self._rest_filename, filename, filename_lowered, best)

    def _first_apart(
        self, url: str, filename: str, url_lowered: str, filename_lowered: str
    ) -> int | None:
        """A value RE2 cannot read (a newline, a lone surrogate) is searched with Python's re;
        the other one still with RE2, the unreadable one's part left empty."""
        url_ok, filename_ok = _re2_reads(url), _re2_reads(filename)
        best = None
        if url_ok or filename_ok:
            assert self._re2_match is not None
            text = (url if url_ok else "") + "\n" + (filename if filename_ok else "")
            lowered = (
                (url_lowered if url_ok else "") + "\n" + (filename_lowered if filename_ok else "")
            )
            kept = [url_ok if on_url else filename_ok for on_url in self._on_url]
            found = [
                self._positions[i]
                for i in self._re2_match(text.encode("utf-8"), False) or ()
                if kept[i] and not self._lowered[i]
            ]
            found += [
                self._positions[i]
                for i in self._re2_match(lowered.encode("utf-8"), False) or ()
                if kept[i] and self._lowered[i]
            ]
            best = min(found) if found else None
        banks = self._rest_url if url_ok else self._python_url
        best = _first_of(banks, url, url_lowered, best)
        banks = self._rest_filename if filename_ok else self._python_filename
        return _first_of(banks, filename, filename_lowered, best)


def _re2_reads(value: str) -> bool:
    """Whether RE2 can search this value in its part of the combined text."""
    if "\n" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _python_banks(entries: list[tuple[int, re.Pattern, bool]]) -> tuple[_PythonBank, _PythonBank]:
    """The regexes searched in the value as is, and those searched in the lowercased value."""
    return (
        _PythonBank([(pos, rx) for pos, rx, lowered in entries if not lowered]),
        _PythonBank([(pos, rx) for pos, rx, lowered in entries if lowered]),
    )


def _first_of(
    banks: tuple[_PythonBank, _PythonBank], value: str, lowered: str, best: int | None
) -> int | None:
    """The lowest position found by Python's re below ``best``, or ``best``."""
    as_is, folded = banks
    if as_is.entries:
        pos = as_is.first(value, before=best)
        best = best if pos is None else pos
    if folded.entries:
        pos = folded.first(lowered, before=best)
        best = best if pos is None else pos
    return best


class _PythonBank:
    """Regexes searched with Python's re: one alternation tells whether to look closer."""

    def __init__(self, entries: list[tuple[int, re.Pattern]]) -> None:
        self.entries = entries

    @functools.cached_property
    def _any(self) -> Callable[[str], object] | None:
        """Search for all combinable regexes; built on first use (RE2 may make it needless)."""
        combinable = [rx.pattern for _pos, rx in self.entries if _combinable(rx)]
        return re.compile("|".join(f"(?:{p})" for p in combinable)).search if combinable else None

    @functools.cached_property
    def _alone(self) -> list[tuple[int, re.Pattern]]:
        return [(pos, rx) for pos, rx in self.entries if not _combinable(rx)]

    def first(self, value: str, before: int | None = None) -> int | None:
        """Position of the first regex found in value, if it is below ``before``."""
        entries = self.entries if self._any is None or self._any(value) else self._alone
        for pos, rx in entries:
            if before is not None and pos >= before:
                return None
            if rx.search(value):
                return pos
        return None


def _combinable(rx: re.Pattern) -> bool:
    """Whether the regex keeps its meaning inside ``(?:...)|(?:...)`` with others.

    Global inline flags, named groups and references to group numbers do not.
    """
    if rx.flags != re.UNICODE or rx.groupindex:
        return False
    return not rx.groups or not re.search(r"\\[1-9]|\(\?\(", rx.pattern)


# --- Python regex -> RE2 regex with the same meaning -----------------------------------


class _Untranslatable(Exception):
    """This pattern has no RE2 equivalent we trust: search it with Python's re."""


#: An RE2 class no character is in.
_NEVER = r"[^\x{0}-\x{10FFFF}]"
#: What goes before a pattern searched in one part of ``head + "\n" + tail``.
_REGION_START = {"head": r"\A[^\n]*", "tail": r"\n[^\n]*"}


def _to_re2(source: str, *, atomic_ok: bool = False, region: str | None = None) -> str:
    """RE2 syntax matching what ``re.search(source, value)`` matches.

    Valid only for values without a newline (then ``^``/``$``, MULTILINE and DOTALL
    need no care). Raises _Untranslatable for constructs RE2 lacks or reads differently.
    With ``region`` ``"head"`` or ``"tail"``, the pattern is searched in that part of
    ``head + "\\n" + tail`` and matches there exactly when it matches that value alone: no
    class takes the newline, so no match crosses it, and ``^``/``$`` are the part's ends.
    """
    parsed = _sre_parse.parse(source)
    body = _Re2Writer(atomic_ok, region).sequence(parsed, parsed.state.flags)
    return body if region is None else _REGION_START[region] + "(?:" + body + ")"


class _Re2Writer:
    def __init__(self, atomic_ok: bool, region: str | None = None) -> None:
        self._atomic_ok = atomic_ok
        self._region = region
        self._start = r"(?m:^)" if region == "tail" else r"\A"
        self._end = r"(?m:$)" if region == "head" else r"\z"

    def sequence(self, items: Any, flags: int) -> str:
        if flags & ~_RE2_FLAGS:
            raise _Untranslatable("flags")
        return "".join(self._item(op.name, av, flags) for op, av in items)

    def _item(self, name: str, av: Any, flags: int) -> str:
        apart = self._region is not None  # the newline is the parts' separator
        if name == "LITERAL":
            if flags & re.I:
                return _char_class([("LITERAL", av)], flags, apart)
            return _NEVER if apart and av == _NEWLINE else _hex(av)
        if name == "NOT_LITERAL":
            return _char_class([("NEGATE", None), ("LITERAL", av)], flags, apart)
        if name == "IN":
            return _char_class([(op.name, value) for op, value in av], flags, apart)
        if name == "ANY":
            return r"[^\n]" if apart else "(?s:.)"
        if name == "AT" and av.name in ("AT_BEGINNING", "AT_BEGINNING_STRING"):
            return self._start
        if name == "AT" and av.name in ("AT_END", "AT_END_STRING"):
            return self._end
        if name == "BRANCH":
            return "(?:" + "|".join(self.sequence(alt, flags) for alt in av[1]) + ")"
        if name == "SUBPATTERN":
            _group, add, remove, sub = av
            return "(?:" + self.sequence(sub, (flags | add) & ~remove) + ")"
        if name == "ATOMIC_GROUP" and self._atomic_ok:
            return "(?:" + self.sequence(av, flags) + ")"
        if name in ("MAX_REPEAT", "MIN_REPEAT"):
            return self._repeat(av, flags, lazy=name == "MIN_REPEAT")
        raise _Untranslatable(name)

    def _repeat(self, av: Any, flags: int, lazy: bool) -> str:
        low, high, sub = av
        bounds = f"{{{low},}}" if high == _sre_parse.MAXREPEAT else f"{{{low},{high}}}"
        if max(low, 0 if high == _sre_parse.MAXREPEAT else high) > _RE2_MAX_REPEAT:
            raise _Untranslatable("repeat")
        return "(?:" + self.sequence(sub, flags) + ")" + bounds + ("?" if lazy else "")


def _hex(code: int) -> str:
    return f"\\x{{{code:X}}}"


_NEWLINE = ord("\n")


def _char_class(items: list[tuple[str, Any]], flags: int, no_newline: bool = False) -> str:
    """An RE2 class for Python's class items (names NEGATE, LITERAL, RANGE, CATEGORY).

    ``no_newline``: the class never takes a newline (the values it is meant for have none).
    """
    negate = any(name == "NEGATE" for name, _ in items)
    items = [(name, av) for name, av in items if name != "NEGATE"]
    categories = [av.name for name, av in items if name == "CATEGORY"]
    chars = [(av, av) if name == "LITERAL" else av for name, av in items if name != "CATEGORY"]
    if flags & re.I and chars:
        if categories:  # Python lowercases the value's char before testing categories too
            raise _Untranslatable("IGNORECASE class with categories")
        chars = _fold_ascii(chars)
    if len(items) == 1 and categories and categories[0] in _NEGATED:  # \D, \W, \S, [^\W]
        negate, categories = not negate, [_NEGATED[categories[0]]]
    if no_newline and negate:
        chars = [*chars, (_NEWLINE, _NEWLINE)]
    elif no_newline:
        chars = _without_newline(chars)
    parts = [_category_class(name, no_newline and not negate) for name in categories]
    parts += [_hex(lo) if lo == hi else f"{_hex(lo)}-{_hex(hi)}" for lo, hi in chars]
    if not any(parts):  # only the newline was in it
        return _NEVER
    return "[" + ("^" if negate else "") + "".join(parts) + "]"


def _without_newline(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """The ranges with the newline taken out."""
    out = []
    for lo, hi in ranges:
        if lo <= _NEWLINE <= hi:
            out += [(a, b) for a, b in ((lo, _NEWLINE - 1), (_NEWLINE + 1, hi)) if a <= b]
        else:
            out.append((lo, hi))
    return out


def _fold_ascii(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Every char Python's IGNORECASE matches with these ASCII chars."""
    if any(hi > 0x7F for _lo, hi in ranges):
        raise _Untranslatable("non-ASCII under IGNORECASE")
    folds = _ascii_folds()
    return [(c, c) for lo, hi in ranges for code in range(lo, hi + 1) for c in folds[code]]


@functools.cache
def _ascii_folds() -> dict[int, tuple[int, ...]]:
    """For each ASCII char, every char ``re.IGNORECASE`` takes as equal to it (asked of re)."""
    extras = {ord(c) for c in re.findall("(?i)[a-z]", _all_chars()) if not c.isascii()}
    return {
        code: tuple(
            c for c in [*range(0x80), *sorted(extras)] if re.fullmatch(_re_hex(code), chr(c), re.I)
        )
        for code in range(0x80)
    }


def _re_hex(code: int) -> str:
    return f"\\x{code:02x}"


_NEGATED = {
    "CATEGORY_NOT_DIGIT": "CATEGORY_DIGIT",
    "CATEGORY_NOT_SPACE": "CATEGORY_SPACE",
    "CATEGORY_NOT_WORD": "CATEGORY_WORD",
}
#: Python's escape for each category. RE2's own \\p{Nd}, \\p{L}... follow another Unicode
#: version (measured: they differ), so classes list Python's code point ranges instead.
_CATEGORIES = {
    "CATEGORY_DIGIT": r"\d",
    "CATEGORY_NOT_DIGIT": r"\D",
    "CATEGORY_SPACE": r"\s",
    "CATEGORY_NOT_SPACE": r"\S",
    "CATEGORY_WORD": r"\w",
    "CATEGORY_NOT_WORD": r"\W",
}


@functools.cache
def _category_class(name: str, no_newline: bool = False) -> str:
    """Class body for \\d, \\w, \\s or a negation, meaning exactly what Python's re means."""
    if name not in _CATEGORIES:
        raise _Untranslatable(name)
    text = _all_chars()
    ranges = _runs(re.finditer(_CATEGORIES[name] + "+", text), text)
    if no_newline:
        ranges = _without_newline(ranges)
    return "".join(_hex(lo) if lo == hi else f"{_hex(lo)}-{_hex(hi)}" for lo, hi in ranges)


def _runs(matches: Iterable, text: str) -> list[tuple[int, int]]:
    return [(ord(text[m.start()]), ord(text[m.end() - 1])) for m in matches]


@functools.cache
def _all_chars() -> str:
    """Every code point but the surrogates (which never reach RE2), in order."""
    return "".join(map(chr, range(0xD800))) + "".join(map(chr, range(0xE000, 0x110000)))
