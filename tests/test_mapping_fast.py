"""The mapping's fast paths give exactly what the full paths give: same ids, results, refusals."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import timezone
from typing import Any

import attrs
import orjson
import pytest
import scrapy
from hypothesis import given, settings
from hypothesis import strategies as st
from itemadapter import ItemAdapter

from scrapy_sdi import mapping
from scrapy_sdi.mapping import (
    CONTRACT_FIELDS,
    InvalidResult,
    ResultMapper,
    encode_draft,
    encode_result,
    stable_result_id,
)

#: Ids published by earlier releases: a stable id never changes, in any process or release.
PINNED_IDS = [
    ("MyCrawler", "https://example.com/path/file.mp3", "7593954287921e5c584d88503049f20e"),
    ("c", "https://e.x/a.mp3", "92e284b2bdc3e081c40507ba7b31b0ac"),
    ("", "https://example.com/", "9efe8a89ed84569d0ccd98bf90a92d65"),
    ("Crawlér ✓", "https://例え.jp/ファイル.mp3", "eca8bb8a93aacc519f48d915aeecbcc6"),
    ("c\ud800", "https://e.x/\udfff", "cca66293dd6c0f43e9e741c9ed00a34d"),
]


def _reference_id(crawler: str, url: str) -> str:
    """The definition: blake2b-128 of crawler, NUL, url in UTF-8 (surrogates passed through)."""
    data = f"{crawler}\x00{url}".encode("utf-8", "surrogatepass")
    return hashlib.blake2b(data, digest_size=16).hexdigest()


@pytest.mark.parametrize(("crawler", "url", "expected"), PINNED_IDS)
def test_stable_ids_are_the_published_ones(crawler: str, url: str, expected: str) -> None:
    assert stable_result_id(crawler, url) == expected
    assert stable_result_id(crawler, url) == expected  # again, from the cached prefix


@settings(max_examples=300, deadline=None, database=None)
@given(st.text(max_size=20), st.text(max_size=200))
def test_stable_ids_follow_the_definition(crawler: str, url: str) -> None:
    assert stable_result_id(crawler, url) == _reference_id(crawler, url)


def test_many_crawler_names_keep_ids_right() -> None:
    """The prefix cache is bounded; ids stay right when it is emptied."""
    for n in range(200):
        crawler = f"crawler-{n % 70}"
        assert stable_result_id(crawler, "https://e.x/") == _reference_id(crawler, "https://e.x/")
    assert len(mapping._ID_PREFIXES) <= 64


# -- items read without ItemAdapter, and the encode fast path -----------------------------------

#: Every field name an item may have: the contract's, extra ones, an ``id``, a non-ASCII and an
#: over-long one (the mapper below allows 64 bytes per field).
NAMES = (*CONTRACT_FIELDS, "size", "tags", "id", "nötig", "k" * 70)
MAX_FIELD = 64

_texts = (
    st.text(max_size=12)
    | st.text(alphabet=st.characters(codec="ascii"), min_size=50, max_size=80)
    | st.text(max_size=40)
    | st.sampled_from(["", " ", "a\x00b", "tab\there", "\ud800", "ünïcødé ✓", "x" * 64, "é" * 40])
)
_urls = st.sampled_from(
    [
        "https://example.com/path/file.mp3",
        "http://example.com/",
        "https://example.com",
        "HTTPS://EXAMPLE.com/a%20b/c%E2%82%AC.mp3?q=1#f",
        "https://example.com/dir/?x=1",
        "https://user:pw@example.com:8080/a.mp3",
        "https://example.com/a%00b",
        "https://例え.jp/ファイル.mp3",
        " https://example.com/padded ",
        "ftp://example.com/a",
        "https://exa mple.com/",
        "https://example.com:99999/",
        "https://example.com/" + "p" * 60,
        "not a url",
        "",
    ]
) | st.builds(lambda path: f"https://example.com/{path}", st.text(max_size=20))
_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | _texts
    | st.binary(max_size=20)
    | st.datetimes(timezones=st.none() | st.just(timezone.utc))
    | st.dates()
    | st.decimals(allow_nan=False)
)
_values = st.recursive(
    _leaves,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
_times = st.sampled_from(["2026-11-22T18:15:51Z", "2026-11-22 18:15:51+02:00", "yesterday", ""]) | (
    st.integers(min_value=-(10**12), max_value=10**12) | st.floats() | st.datetimes()
)
_field_values = {
    "url": _urls | _values,
    "filename": _texts | _values,
    "crawled_at": st.none() | _times | _values,
    "extra": st.none() | st.dictionaries(st.text(max_size=5), _values, max_size=3) | _values,
}
_short = st.text(alphabet=st.characters(codec="ascii", min_codepoint=32), max_size=20)


@st.composite
def fields_st(draw: Any) -> dict[str, Any]:
    """A typical item (the contract's text fields, short strings), then up to 3 fields changed,
    added or removed with unusual values, so both outcomes and every path are reached."""
    fields = {
        "url": draw(st.builds("https://example.com/{}.mp3".format, _short.filter(str.isalnum))),
        **{name: draw(_short) for name in ("filename", "referrer", "description", "uploader")},
    }
    for name in draw(st.lists(st.sampled_from(NAMES), max_size=3)):
        if draw(st.integers(0, 4)) == 0:
            fields.pop(name, None)
        else:
            fields[name] = draw(_field_values.get(name, _texts | _values))
    return fields


class _Item(scrapy.Item):
    locals().update({name: scrapy.Field() for name in NAMES if name.isidentifier()})


_Dataclass = dataclasses.make_dataclass(
    "_Dataclass",
    [(n, Any, dataclasses.field(default=None)) for n in NAMES if n.isidentifier()],
)
_Attrs = attrs.make_class(
    "_Attrs", {n: attrs.field(default=None) for n in NAMES if n.isidentifier()}
)


class _DictSubclass(dict):  # type: ignore[type-arg]
    pass


def _build(kind: str, fields: dict[str, Any], unset: list[str]) -> Any:
    """An item of ``kind`` with ``fields``; dataclass/attrs fields in ``unset`` are deleted."""
    if kind == "dict":
        return dict(fields)
    if kind == "dict subclass":
        return _DictSubclass(fields)
    fields = {k: v for k, v in fields.items() if k.isidentifier()}
    if kind == "scrapy.Item":
        return _Item(**fields)
    item = (_Dataclass if kind == "dataclass" else _Attrs)(**fields)
    for name in unset:
        if name not in fields:
            object.__delattr__(item, name)
    if hasattr(item, "__dict__"):
        item.__dict__["stray"] = "an attribute that is not a field"
    return item


def _outcome(work: Any) -> tuple[str, Any]:
    try:
        return "ok", work()
    except InvalidResult as exc:
        return "invalid", (exc.reason, exc.field)


def full_path(mapper: ResultMapper, item: Any, result_id: str, max_bytes: int) -> tuple[str, Any]:
    """Today's reference: ItemAdapter for every item, the whole mapping, then encode_result."""
    return _outcome(
        lambda: encode_result(
            mapper.to_result(dict(ItemAdapter(item))), result_id, max_bytes=max_bytes
        )
    )


def fast_path(mapper: ResultMapper, item: Any, result_id: str, max_bytes: int) -> tuple[str, Any]:
    """What the pipeline does with an item: a draft, then encoded with its id."""

    def work() -> bytes:
        result = mapper.draft(item)
        assert list(result) == ["id", *CONTRACT_FIELDS]
        return encode_draft(result, result_id, max_bytes=max_bytes)

    return _outcome(work)


KINDS = ("dict", "dict subclass", "scrapy.Item", "dataclass", "attrs")


class _StillMapper(ResultMapper):
    """A mapper whose now does not move: both paths must see the same crawled_at."""

    def _now(self) -> str:
        return "2026-12-05T07:00:00Z"


@settings(max_examples=1500, deadline=None, database=None)
@given(
    st.sampled_from(KINDS),
    fields_st(),
    st.lists(st.sampled_from([n for n in NAMES if n.isidentifier()]), max_size=3, unique=True),
    st.sampled_from(
        ["0123456789abcdef0123456789abcdef", "x", "ü" * 3, 'a"b\\', "", "a" * 128, "a" * 129]
        + ["-" * 129, "\ud800", "tab\t", "ß" * 128]
    ),
    st.sampled_from([4_000_000, 330, 280]),
)
def test_fast_path_gives_what_the_full_path_gives(
    kind: str, fields: dict[str, Any], unset: list[str], result_id: str, max_bytes: int
) -> None:
    mapper = _StillMapper(max_field_bytes=MAX_FIELD)
    item = _build(kind, fields, unset)
    expected = full_path(mapper, item, result_id, max_bytes)
    kept = mapper.keep(dict(ItemAdapter(item)))  # what an invalid row keeps of it
    for _ in range(2):  # the second time with the type's reader known
        assert fast_path(mapper, item, result_id, max_bytes) == expected
        assert mapper.keep(item) == kept


def test_types_with_their_own_reading_are_read_through_itemadapter() -> None:
    class Upper(scrapy.Item):
        url = scrapy.Field()

        def __getitem__(self, key: str) -> Any:
            return super().__getitem__(key).upper()

    mapper = ResultMapper()
    for _ in range(2):
        assert mapper.to_result(Upper(url="https://e.x/a.mp3"))["url"] == "HTTPS://E.X/A.MP3"


@pytest.mark.parametrize("result_id", ["0123456789abcdef0123456789abcdef", 'a"b', "ü"])
def test_the_size_limit_is_the_same_at_its_edge(result_id: str) -> None:
    mapper = ResultMapper()
    item = {"url": "https://example.com/a.mp3", "note": "ü" * 10}
    size = len(encode_result(mapper.to_result(item), result_id))
    assert len(encode_draft(mapper.draft(item), result_id, max_bytes=size)) == size
    for path in (
        lambda: encode_result(mapper.to_result(item), result_id, max_bytes=size - 1),
        lambda: encode_draft(mapper.draft(item), result_id, max_bytes=size - 1),
    ):
        with pytest.raises(InvalidResult) as refused:
            path()
        assert (
            refused.value.reason
            == f"result is {size} bytes as JSON, over the {size - 1}-byte limit"
        )


def test_a_stray_id_in_the_item_or_its_extra_never_replaces_the_result_id() -> None:
    mapper = ResultMapper()
    item = {"url": "https://e.x/a.mp3", "id": "item's", "extra": {"id": "extra's"}}
    encoded = encode_draft(mapper.draft(item), "abc123")
    assert encoded == encode_result(mapper.to_result(item), "abc123")
    assert encoded.startswith(b'{"id":"abc123","url":')
    assert orjson.loads(encoded)["extra"] == {"id": "item's"}  # fields win over merged extra


@pytest.mark.parametrize("result_id", ["0123456789abcdef0123456789abcdef", "", "x" * 129])
def test_a_result_json_cannot_encode_is_refused_for_the_same_reason(result_id: str) -> None:
    """A field map may name an extra field with a lone surrogate: only the encoder finds it."""
    mapper = ResultMapper({"note": "bad\ud800"})
    item = {"url": "https://e.x/a.mp3", "note": "x"}
    expected = _outcome(lambda: encode_result(mapper.to_result(item), result_id))
    assert expected[0] == "invalid"
    assert _outcome(lambda: encode_draft(mapper.draft(item), result_id)) == expected
