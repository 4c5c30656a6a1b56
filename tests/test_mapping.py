"""ResultMapper: every item type and every rule of turning an item into one contract result."""

from __future__ import annotations

import base64
import dataclasses
import enum
import random
import uuid
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

import orjson
import pytest
import scrapy

from scrapy_sdi.errors import SDIConfigError
from scrapy_sdi.mapping import (
    CONTRACT_FIELDS,
    DEFAULT_MAX_RESULT_BYTES,
    NOT_KEPT,
    InvalidResult,
    ResultMapper,
    encode_batch,
    encode_result,
    kept_fields,
    new_result_id,
)
from tests.support.items import FileAttrs, FileDataclass, FileItem

URL = "https://example.com/path/file.mp3"
FIVE = {
    "url": URL,
    "filename": "file.mp3",
    "referrer": "https://google.com",
    "description": "Auto-detected sample",
    "uploader": "DetectorBot",
}
WHEN = datetime(2026, 11, 22, 18, 15, 51, tzinfo=timezone.utc)


ITEM_TYPES = [dict, FileItem, FileDataclass, FileAttrs]


@pytest.fixture
def mapper() -> ResultMapper:
    return ResultMapper()


def reason_of(mapper: ResultMapper, item: Any) -> str:
    with pytest.raises(InvalidResult) as info:
        mapper.to_result(item)
    assert str(info.value) == info.value.reason
    assert "\n" not in info.value.reason
    return info.value.reason


# -- item types --------------------------------------------------------------------------------


@pytest.mark.parametrize("item_type", ITEM_TYPES)
def test_every_item_type_gives_the_same_result(mapper: ResultMapper, item_type: type) -> None:
    item = item_type(**FIVE, crawled_at=WHEN, size=1234)
    assert mapper.to_result(item) == {
        **FIVE,
        "crawled_at": "2026-11-22T18:15:51Z",
        "extra": {"size": 1234},
    }


@pytest.mark.parametrize("item_type", ITEM_TYPES)
def test_every_item_type_is_validated(mapper: ResultMapper, item_type: type) -> None:
    item = item_type(url="ftp://example.com/a", filename="a")
    assert reason_of(mapper, item) == "url is not an absolute http(s) URL: 'ftp://example.com/a'"


def test_result_has_exactly_the_contract_fields(mapper: ResultMapper) -> None:
    result = mapper.to_result({"url": URL})
    assert tuple(result) == CONTRACT_FIELDS
    assert result["referrer"] is None and result["description"] is None
    assert result["uploader"] is None and result["extra"] == {}


def test_dict_subclass_item(mapper: ResultMapper) -> None:
    class Subclass(dict):
        pass

    assert mapper.to_result(Subclass(url=URL, x=1))["extra"] == {"x": 1}


def test_object_that_is_no_item_is_invalid(mapper: ResultMapper) -> None:
    assert reason_of(mapper, object()) == "item of type object is not a supported item"
    assert reason_of(mapper, "https://example.com/") == "item of type str is not a supported item"


# -- field map ---------------------------------------------------------------------------------


def test_field_map_renames_item_fields_to_contract_fields() -> None:
    mapper = ResultMapper({"file_url": "url", "name": "filename", "page": "referrer"})
    result = mapper.to_result(
        {"file_url": URL, "name": "song.mp3", "page": "https://a.example/", "uploader": "bot"}
    )
    assert result["url"] == URL
    assert result["filename"] == "song.mp3"
    assert result["referrer"] == "https://a.example/"
    assert result["uploader"] == "bot"  # identity for a contract name nothing is mapped to
    assert result["extra"] == {}


def test_field_map_source_wins_and_same_named_field_goes_to_extra() -> None:
    mapper = ResultMapper({"file_url": "url"})
    result = mapper.to_result({"file_url": URL, "url": "https://other.example/x"})
    assert result["url"] == URL
    assert result["extra"] == {"url": "https://other.example/x"}


def test_field_map_to_a_non_contract_name_renames_in_extra() -> None:
    mapper = ResultMapper({"sz": "size"})
    assert mapper.to_result({"url": URL, "sz": 3})["extra"] == {"size": 3}


def test_field_map_swaps_contract_fields() -> None:
    mapper = ResultMapper({"referrer": "description", "page": "referrer"})
    result = mapper.to_result({"url": URL, "referrer": "text", "page": "https://p.example/"})
    assert result["description"] == "text"
    assert result["referrer"] == "https://p.example/"


@pytest.mark.parametrize(
    ("field_map", "message"),
    [
        ({"a": "url", "b": "url"}, "more than one item field to 'url'"),
        ({"a": "id"}, "cannot map to 'id'"),
        ({"a": ""}, "non-empty field names"),
        ({"a": 3}, "non-empty field names"),
        (["url"], "must be a dict"),
    ],
)
def test_bad_field_map_is_a_config_error(field_map: Any, message: str) -> None:
    with pytest.raises(SDIConfigError, match=message):
        ResultMapper(field_map)


@pytest.mark.parametrize("kwargs", [{"max_depth": 0}, {"max_depth": 1000}, {"max_field_bytes": 0}])
def test_bad_limits_are_config_errors(kwargs: dict[str, int]) -> None:
    with pytest.raises(SDIConfigError):
        ResultMapper(**kwargs)


# -- url and filename --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "filename"),
    [
        ("https://example.com/a/b/file.mp3", "file.mp3"),
        ("https://example.com/a/file.mp3?x=1&y=/z.bin#frag", "file.mp3"),
        ("https://example.com/a/my%20song%2Bmix.mp3", "my song+mix.mp3"),
        ("https://example.com/%C3%BCber%20%E6%97%A5.mp3", "über 日.mp3"),
        ("https://example.com/über/日本.mp3", "日本.mp3"),
        ("https://example.com/a/b/", "example.com"),
        ("https://EXAMPLE.com", "example.com"),
        ("https://Example.com?q=file.mp3", "example.com"),
        ("http://user:pw@host.example:8080/dir/x.bin", "x.bin"),
        ("http://[::1]:8750/", "::1"),
        ("https://example.com/a%00b.mp3", "a%00b.mp3"),  # decoded NUL: keep it encoded
        ("https://example.com/bad%ffutf8", "bad\ufffdutf8"),
    ],
)
def test_filename_defaults_to_last_path_segment(
    mapper: ResultMapper, url: str, filename: str
) -> None:
    result = mapper.to_result({"url": url})
    assert result["filename"] == filename
    assert result["url"] == url


@pytest.mark.parametrize("filename", [None, ""])
def test_missing_or_empty_filename_gets_the_default(mapper: ResultMapper, filename: Any) -> None:
    assert mapper.to_result({"url": URL, "filename": filename})["filename"] == "file.mp3"


def test_given_filename_is_kept(mapper: ResultMapper) -> None:
    assert mapper.to_result({"url": URL, "filename": "Ärger/x.mp3"})["filename"] == "Ärger/x.mp3"
    assert mapper.to_result({"url": URL, "filename": 42})["filename"] == "42"


@pytest.mark.parametrize(
    "url",
    [
        "  https://example.com/a.mp3\n",
        "\thttps://example.com/a.mp3 ",
        "\u00a0https://example.com/a.mp3",
    ],
)
def test_url_whitespace_is_stripped(mapper: ResultMapper, url: str) -> None:
    assert mapper.to_result({"url": url})["url"] == "https://example.com/a.mp3"


@pytest.mark.parametrize(
    "url",
    [
        "HTTPS://EXAMPLE.COM/A.MP3",
        "http://example.com/a b.mp3",
        "https://xn--bcher-kva.example/",
        "https://bücher.example/a",
        "http://127.0.0.1:8750/api",
    ],
)
def test_unusual_but_valid_urls_are_accepted(mapper: ResultMapper, url: str) -> None:
    assert mapper.to_result({"url": url})["url"] == url


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        ({}, "url is missing"),
        ({"url": None}, "url is missing"),
        ({"url": b"https://example.com/"}, "url is not a string: bytes"),
        ({"url": 12}, "url is not a string: int"),
        ({"url": "   "}, "url is empty"),
        (
            {"url": "ftp://example.com/f"},
            "url is not an absolute http(s) URL: 'ftp://example.com/f'",
        ),
        ({"url": "/relative/path.mp3"}, "url is not an absolute http(s) URL: '/relative/path.mp3'"),
        ({"url": "example.com/a.mp3"}, "url is not an absolute http(s) URL: 'example.com/a.mp3'"),
        ({"url": "http://"}, "url is not an absolute http(s) URL: 'http://'"),
        ({"url": "https:///path"}, "url is not an absolute http(s) URL: 'https:///path'"),
        (
            {"url": "javascript:alert(1)"},
            "url is not an absolute http(s) URL: 'javascript:alert(1)'",
        ),
        (
            {"url": "https://exa\x00mple.com/"},
            "url contains a NUL byte: 'https://exa\\x00mple.com/'",
        ),
        (
            {"url": "https://example.com/a\nb"},
            "url contains a control character: 'https://example.com/a\\nb'",
        ),
        (
            {"url": "http://example.com:99999/"},
            "url is not a valid URL: 'http://example.com:99999/'",
        ),
        ({"url": "http://example.com:port/"}, "url is not a valid URL: 'http://example.com:port/'"),
        ({"url": "http://[::1/"}, "url is not a valid URL: 'http://[::1/'"),
        ({"url": "http://exa mple.com/"}, "url has whitespace in its host: 'http://exa mple.com/'"),
        (
            {"url": "https://example.com/\ud800"},
            "url contains a lone surrogate and cannot be encoded as UTF-8",
        ),
        ({"url": URL, "filename": "a\x00b"}, "filename contains a NUL byte: 'a\\x00b'"),
        (
            {"url": URL, "filename": "a\udcff"},
            "filename contains a lone surrogate and cannot be encoded as UTF-8",
        ),
        ({"url": URL, "filename": b"x.mp3"}, "filename is not a string: bytes"),
        ({"url": URL, "filename": True}, "filename is not a string: bool"),
    ],
)
def test_bad_url_or_filename_gives_its_reason(
    mapper: ResultMapper, item: dict, reason: str
) -> None:
    assert reason_of(mapper, item) == reason


def test_long_values_are_cut_in_reasons(mapper: ResultMapper) -> None:
    reason = reason_of(mapper, {"url": "ftp://example.com/" + "a" * 500})
    assert reason.endswith("…")
    assert len(reason) < 140
    assert "a" * 62 in reason and "a" * 63 not in reason  # 80 characters of the value


@pytest.mark.parametrize(
    ("item", "field"),
    [
        ({"url": URL, "description": ["x"]}, "description"),
        ({"url": URL, "uploader": "\ud800"}, "uploader"),
        ({"url": None}, "url"),
        ({"url": URL, "crawled_at": "x"}, "crawled_at"),
        ({"url": URL, "x": ["\ud800"]}, "extra"),
        ({"url": URL, "extra": {"a": object()}}, "extra"),
    ],
)
def test_error_names_its_field(mapper: ResultMapper, item: dict, field: str) -> None:
    with pytest.raises(InvalidResult) as info:
        mapper.to_result(item)
    assert info.value.field == field
    assert isinstance(info.value, ValueError)


def test_huge_integers_are_invalid_not_value_error(mapper: ResultMapper) -> None:
    huge = 10**5000
    assert reason_of(mapper, {"url": URL, "description": huge}) == (
        "description holds an integer too long to write out"
    )
    assert reason_of(mapper, {"url": URL, "crawled_at": huge}) == (
        "crawled_at is not a valid time: <int>"
    )
    for extra in ({"x": huge}, {"x": [{huge: 1}]}):
        assert reason_of(mapper, {"url": URL, **extra}) == (
            "extra field 'x' holds an integer too long to write out"
        )


# -- optional text fields ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["referrer", "description", "uploader"])
def test_optional_text_fields(mapper: ResultMapper, name: str) -> None:
    assert mapper.to_result({"url": URL, name: None})[name] is None
    assert mapper.to_result({"url": URL, name: ""})[name] == ""
    assert mapper.to_result({"url": URL, name: "Grüße"})[name] == "Grüße"
    assert mapper.to_result({"url": URL, name: 7})[name] == "7"
    assert mapper.to_result({"url": URL, name: 1.5})[name] == "1.5"
    assert mapper.to_result({"url": URL, name: Decimal("0.10")})[name] == "0.10"
    for bad in (True, ["a"], {"a": 1}, b"bytes", object()):
        reason = reason_of(mapper, {"url": URL, name: bad})
        assert reason == f"{name} is not a string: {type(bad).__name__}"
    surrogate = reason_of(mapper, {"url": URL, name: "a\ud800b"})
    assert surrogate == f"{name} contains a lone surrogate and cannot be encoded as UTF-8"


def test_str_subclass_becomes_plain_str(mapper: ResultMapper) -> None:
    class Color(str, enum.Enum):
        RED = "red"

    result = mapper.to_result({"url": URL, "uploader": Color.RED, "c": Color.RED})
    assert type(result["uploader"]) is str and result["uploader"] == "red"
    assert type(result["extra"]["c"]) is str and result["extra"]["c"] == "red"


def test_six_megabyte_description_is_invalid(mapper: ResultMapper) -> None:
    reason = reason_of(mapper, {"url": URL, "description": "x" * (6 * 1024 * 1024)})
    assert reason == "description is 6291456 bytes, over the 1048576-byte limit"


def test_field_size_limit_counts_utf8_bytes() -> None:
    mapper = ResultMapper(max_field_bytes=12)
    url = "http://a.b/"  # 11 bytes
    assert mapper.to_result({"url": url, "description": "é" * 6})["description"] == "é" * 6
    assert reason_of(mapper, {"url": url, "description": "é" * 7}) == (
        "description is 14 bytes, over the 12-byte limit"
    )
    assert reason_of(mapper, {"url": url, "x": ["1234567890123"]}) == (
        "extra field 'x' is 13 bytes, over the 12-byte limit"
    )
    assert reason_of(mapper, {"url": url + "ab"}) == "url is 13 bytes, over the 12-byte limit"


# -- crawled_at --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (WHEN, "2026-11-22T18:15:51Z"),
        (datetime(2026, 11, 22, 18, 15, 51, 999999), "2026-11-22T18:15:51Z"),  # naive is UTC
        (
            datetime(2026, 11, 22, 20, 15, 51, tzinfo=timezone(timedelta(hours=2))),
            "2026-11-22T18:15:51Z",
        ),
        (date(2026, 11, 22), "2026-11-22T00:00:00Z"),
        ("2026-11-22T18:15:51Z", "2026-11-22T18:15:51Z"),
        ("2026-11-22T18:15:51.250Z", "2026-11-22T18:15:51Z"),
        ("2026-11-22T19:15:51+01:00", "2026-11-22T18:15:51Z"),
        ("2026-11-22 18:15:51", "2026-11-22T18:15:51Z"),
        (WHEN.timestamp(), "2026-11-22T18:15:51Z"),
        (int(WHEN.timestamp()), "2026-11-22T18:15:51Z"),
        (datetime(1, 1, 1), "0001-01-01T00:00:00Z"),
    ],
)
def test_crawled_at_is_iso_utc(mapper: ResultMapper, value: Any, expected: str) -> None:
    assert mapper.to_result({"url": URL, "crawled_at": value})["crawled_at"] == expected


def test_crawled_at_defaults_to_now(mapper: ResultMapper) -> None:
    before = datetime.now(timezone.utc).replace(microsecond=0)
    stamp = mapper.to_result({"url": URL})["crawled_at"]
    after = datetime.now(timezone.utc)
    assert stamp.endswith("Z") and len(stamp) == 20
    assert before <= datetime.fromisoformat(stamp[:-1]).replace(tzinfo=timezone.utc) <= after


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("yesterday", "crawled_at is not a valid time: 'yesterday'"),
        ("", "crawled_at is not a valid time: ''"),
        ("2026-13-01T00:00:00Z", "crawled_at is not a valid time: '2026-13-01T00:00:00Z'"),
        (float("nan"), "crawled_at is not a valid time: nan"),
        (1e20, "crawled_at is not a valid time: 1e+20"),
        (True, "crawled_at is not a time: bool"),
        ([2026], "crawled_at is not a time: list"),
    ],
)
def test_bad_crawled_at_gives_its_reason(mapper: ResultMapper, value: Any, reason: str) -> None:
    assert reason_of(mapper, {"url": URL, "crawled_at": value}) == reason


def test_crawled_at_that_overflows_utc_is_invalid(mapper: ResultMapper) -> None:
    early = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5)))
    assert reason_of(mapper, {"url": URL, "crawled_at": early}).startswith(
        "crawled_at is not a valid"
    )


# -- extra -------------------------------------------------------------------------------------


class Kind(enum.IntEnum):
    AUDIO = 3


@dataclasses.dataclass
class Owner:
    name: str
    tags: tuple = ()


class Nested(scrapy.Item):
    label = scrapy.Field()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("text", "text"),
        (3, 3),
        (-(2**63), -(2**63)),
        (2**64 - 1, 2**64 - 1),
        (2**64, str(2**64)),  # beyond what orjson encodes: kept exactly as a string
        (-(2**63) - 1, str(-(2**63) - 1)),
        (Kind.AUDIO, 3),
        (1.25, 1.25),
        (True, True),
        (datetime(2026, 1, 2, 3, 4, 5, 6), "2026-01-02T03:04:05.000006Z"),
        (
            datetime(2026, 1, 2, 5, 4, 5, tzinfo=timezone(timedelta(hours=2))),
            "2026-01-02T03:04:05Z",
        ),
        (date(2026, 1, 2), "2026-01-02"),
        (time(3, 4, 5), "03:04:05"),
        (Decimal("0.1000000000000000000001"), "0.1000000000000000000001"),
        (Decimal("1E+30"), "1E+30"),
        (b"caf\xc3\xa9", "café"),
        (b"\xff\xfe\x00", base64.b64encode(b"\xff\xfe\x00").decode()),
        (bytearray(b"ab"), "ab"),
        (memoryview(b"ab"), "ab"),
        (uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"),
        ((1, "a"), [1, "a"]),
        ({3, 1, 2}, [1, 2, 3]),
        (frozenset({"b", "a"}), ["a", "b"]),
        ([None, {"k": None}], [None, {"k": None}]),  # nested None is kept as null
        ({1: "a", "b": (2,)}, {"1": "a", "b": [2]}),
        (Owner("ann", ("x",)), {"name": "ann", "tags": ["x"]}),
        (Nested(label="n"), {"label": "n"}),
        ([Nested(label=b"\x00")], [{"label": "\x00"}]),
    ],
)
def test_extra_values_become_json(mapper: ResultMapper, value: Any, expected: Any) -> None:
    result = mapper.to_result({"url": URL, "value": value})
    assert result["extra"] == {"value": expected}
    assert type(result["extra"]["value"]) is type(expected)
    assert orjson.loads(encode_result(result, "id1"))["extra"] == {"value": expected}


@pytest.mark.parametrize("members", [{1, "a", None}, {Decimal("NaN"), Decimal(1), 2}])
def test_unsortable_set_keeps_all_members(mapper: ResultMapper, members: set) -> None:
    extra = mapper.to_result({"url": URL, "s": members})["extra"]
    assert sorted(map(str, extra["s"])) == sorted(map(str, members))


def test_none_fields_are_left_out_of_extra(mapper: ResultMapper) -> None:
    assert mapper.to_result({"url": URL, "a": None, "b": 0, "c": ""})["extra"] == {"b": 0, "c": ""}


def test_extra_field_is_merged(mapper: ResultMapper) -> None:
    result = mapper.to_result({"url": URL, "extra": {"a": 1, "b": 2}, "b": 3})
    assert result["extra"] == {"a": 1, "b": 3}
    assert mapper.to_result({"url": URL, "extra": None})["extra"] == {}
    assert reason_of(mapper, {"url": URL, "extra": [1]}) == "extra is not a mapping: list"


def test_non_string_item_keys_go_to_extra_as_strings(mapper: ResultMapper) -> None:
    assert mapper.to_result({"url": URL, 5: "five"})["extra"] == {"5": "five"}


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (object(), "extra field 'x' is not JSON-serializable: object"),
        ([1, {"deep": complex(1, 2)}], "extra field 'x' is not JSON-serializable: complex"),
        (float("nan"), "extra field 'x' holds a non-finite number: nan"),
        ([float("-inf")], "extra field 'x' holds a non-finite number: -inf"),
        ("a\udc80", "extra field 'x' contains a lone surrogate and cannot be encoded as UTF-8"),
        (
            {"k\ud800": 1},
            "extra field 'x' contains a lone surrogate and cannot be encoded as UTF-8",
        ),
        ({(1, 2): 1}, "extra field 'x' has a key that is not a string: (1, 2)"),
        ({None: 1}, "extra field 'x' has a key that is not a string: None"),
        (
            datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1))),
            "extra field 'x' holds a datetime outside UTC's range",
        ),
        (lambda: 1, "extra field 'x' is not JSON-serializable: function"),
    ],
)
def test_bad_extra_value_gives_its_reason(mapper: ResultMapper, value: Any, reason: str) -> None:
    assert reason_of(mapper, {"url": URL, "x": value}) == reason


def test_deep_nesting_is_invalid_not_recursion_error(mapper: ResultMapper) -> None:
    for make in (lambda v: [v], lambda v: {"k": v}, lambda v: (v,)):
        value: Any = "leaf"
        for _ in range(2000):
            value = make(value)
        assert (
            reason_of(mapper, {"url": URL, "x": value})
            == "extra field 'x' nests deeper than 32 levels"
        )


def test_nesting_up_to_max_depth_is_accepted() -> None:
    mapper = ResultMapper(max_depth=3)
    assert mapper.to_result({"url": URL, "x": [[[Decimal(1)]]]})["extra"] == {"x": [[["1"]]]}
    assert (
        reason_of(mapper, {"url": URL, "x": [[[[1]]]]})
        == "extra field 'x' nests deeper than 3 levels"
    )
    assert reason_of(mapper, {"url": URL, "extra": {"x": [[[{}]]]}}).endswith(
        "deeper than 3 levels"
    )


def test_cycles_are_invalid(mapper: ResultMapper) -> None:
    loop: list = []
    loop.append(loop)
    assert (
        reason_of(mapper, {"url": URL, "x": loop}) == "extra field 'x' nests deeper than 32 levels"
    )


def test_max_depth_allowed_still_encodes() -> None:
    mapper = ResultMapper(max_depth=200)
    value: Any = 1
    for _ in range(200):
        value = [value]
    encoded = encode_result(mapper.to_result({"url": URL, "x": value}), "id")
    assert orjson.loads(encoded)["extra"]["x"] == value


# -- encoding ----------------------------------------------------------------------------------


def test_encode_result_includes_id_and_round_trips(mapper: ResultMapper) -> None:
    result = mapper.to_result({**FIVE, "crawled_at": WHEN, "n": [1, "ü"]})
    decoded = orjson.loads(encode_result(result, "abc"))
    assert decoded == {"id": "abc", **result}
    assert next(iter(decoded)) == "id"


def test_encode_result_keeps_the_given_id() -> None:
    assert orjson.loads(encode_result({"id": "stray", "url": URL}, "mine"))["id"] == "mine"


@pytest.mark.parametrize("result_id", ["", "x" * 129, None, 5])
def test_encode_result_refuses_bad_ids(result_id: Any) -> None:
    with pytest.raises(InvalidResult, match="result id must be a string of 1-128 characters"):
        encode_result({"url": URL}, result_id)


@pytest.mark.parametrize(
    "result",
    [{"url": "\ud800"}, {"extra": {"x": object()}}, {"extra": {"x": 2**70}}, {"extra": {1: 2}}],
)
def test_encode_errors_become_invalid_result(result: dict) -> None:
    with pytest.raises(InvalidResult, match="result cannot be encoded as JSON"):
        encode_result(result, "id")


def test_encode_deep_nesting_becomes_invalid_result() -> None:
    value: Any = 1
    for _ in range(300):
        value = [value]
    with pytest.raises(InvalidResult, match="cannot be encoded"):
        encode_result({"extra": {"x": value}}, "id")


def test_encode_result_refuses_results_no_batch_can_hold(mapper: ResultMapper) -> None:
    result = mapper.to_result({"url": URL, **{f"f{i}": "x" * 1_000_000 for i in range(5)}})
    with pytest.raises(
        InvalidResult, match=r"result is \d+ bytes as JSON, over the 4000000-byte limit"
    ):
        encode_result(result, "id")
    assert len(encode_result(result, "id", max_bytes=6_000_000)) > 5_000_000


def test_encode_batch_is_valid_json(mapper: ResultMapper) -> None:
    results = [mapper.to_result({"url": f"https://e.example/{i}.mp3", "n": i}) for i in range(3)]
    ids = [new_result_id() for _ in results]
    body = encode_batch(
        'My "Crawler" ü', [encode_result(r, i) for r, i in zip(results, ids, strict=True)]
    )
    assert orjson.loads(body) == {
        "crawler": 'My "Crawler" ü',
        "results": [{"id": i, **r} for r, i in zip(results, ids, strict=True)],
    }


def test_encode_batch_of_nothing() -> None:
    assert orjson.loads(encode_batch("c", [])) == {"crawler": "c", "results": []}


def test_new_result_id_is_uuid4_hex() -> None:
    ids = {new_result_id() for _ in range(1000)}
    assert len(ids) == 1000
    for result_id in list(ids)[:50]:
        assert len(result_id) == 32
        parsed = uuid.UUID(hex=result_id)
        assert parsed.hex == result_id
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122


# -- junk --------------------------------------------------------------------------------------


JUNK_SCALARS = [
    None,
    True,
    0,
    -1,
    2**70,
    1.5,
    float("nan"),
    float("inf"),
    "",
    " ",
    "x\x00y",
    "\ud800",
    "é" * 3,
    "https://example.com/a%00b/%ff",
    "http://",
    "HTTP://A.B/c d",
    "ftp://x/y",
    "http://[::1",
    "http://a:b/",
    "2026-11-22T18:15:51Z",
    "not a date",
    b"\xff\x00",
    b"ok",
    Decimal("NaN"),
    10**5000,
    datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=3))),
    date.today(),
    object(),
    complex(1, 1),
    uuid.uuid4(),
    Kind.AUDIO,
    Owner("o"),
    Nested(label="l"),
]


def _junk(rng: random.Random, depth: int = 0) -> Any:
    if depth < 3 and rng.random() < 0.3:
        maker = rng.choice([list, tuple, set, dict])
        members = [_junk(rng, depth + 1) for _ in range(rng.randrange(4))]
        if maker is dict:
            return {rng.choice(["k", 1, None, (1,), "\udcff", 2.5]): v for v in members}
        if maker is set:
            return {m for m in members if _hashable(m)}
        return maker(members)
    return rng.choice(JUNK_SCALARS)


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _junk_item(rng: random.Random) -> Any:
    names = [*CONTRACT_FIELDS, "other", "id", "file_url"]
    fields = {rng.choice(names): _junk(rng) for _ in range(rng.randrange(8))}
    if rng.random() < 0.5:
        fields["url"] = rng.choice(["https://example.com/f.mp3", "http://h/", " http://h/%C3%A9 "])
    shape = rng.choice(["dict", "item", "dataclass", "attrs", "other"])
    if shape == "dict":
        return fields
    if shape == "other":
        return rng.choice([None, 3, "https://example.com/", ["url"], object()])
    known = {k: v for k, v in fields.items() if k in FileItem.fields}
    return {"item": FileItem, "dataclass": FileDataclass, "attrs": FileAttrs}[shape](**known)


def test_junk_items_raise_only_invalid_result() -> None:
    rng = random.Random(20261122)
    mapper = ResultMapper({"file_url": "url"} if rng.random() < 0.5 else {})
    valid = 0
    for _ in range(5000):
        item = _junk_item(rng)
        try:
            encoded = encode_result(mapper.to_result(item), new_result_id())
        except InvalidResult as exc:
            assert exc.reason and "\n" not in exc.reason
            continue
        decoded = orjson.loads(encoded)
        assert isinstance(decoded["url"], str) and decoded["url"].startswith(("http", "HTTP"))
        assert isinstance(decoded["filename"], str) and decoded["filename"]
        valid += 1
    assert 100 < valid < 5000  # the generator reaches both outcomes


def test_junk_items_with_hypothesis() -> None:
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    mapper = ResultMapper()
    leaves = st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary()
    values = st.recursive(
        leaves | st.datetimes() | st.decimals() | st.builds(object),
        lambda inner: st.lists(inner) | st.dictionaries(st.text() | st.integers(), inner),
        max_leaves=8,
    )
    items = st.dictionaries(st.sampled_from([*CONTRACT_FIELDS, "a", "b"]) | st.text(), values)
    urls = st.text() | st.sampled_from(["https://example.com/a", "http://x/%E2%82%AC"]) | values

    @hypothesis.settings(max_examples=100, deadline=None, database=None)
    @hypothesis.given(items, urls)
    def check(item: dict, url: Any) -> None:
        try:
            encode_result(mapper.to_result({**item, "url": url}), "id")
        except InvalidResult as exc:
            assert exc.reason

    check()


def _deep(levels: int) -> Any:
    value: Any = "leaf"
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize(
    "item",
    [
        {"url": URL, "x": _deep(2000)},
        {"url": URL, "description": "x" * 6_000_000},
        {"url": "https://exa\ud800mple.com/", "x": b"\xff"},
        {"url": URL, **{f"part{i}": "y" * 900_000 for i in range(6)}},
        {"url": URL, (1, 2): "a key JSON cannot hold"},
        FileItem(url=URL, size=_deep(2000)),
        FileDataclass(url=URL, size=_deep(2000)),
        FileAttrs(url=URL, size=object()),
        object(),
    ],
    ids=[
        "deep",
        "6MB",
        "surrogate",
        "5.4MB",
        "tuple-key",
        "scrapy.Item",
        "dataclass",
        "attrs",
        "not-an-item",
    ],
)
def test_an_invalid_item_is_kept_as_bounded_json_and_stays_invalid(
    mapper: ResultMapper, item: Any
) -> None:
    """What the buffer keeps of an invalid item, whatever made it invalid: JSON, bounded, never sendable."""
    url, kept = mapper.keep(item)
    assert len(kept) <= DEFAULT_MAX_RESULT_BYTES
    fields = orjson.loads(kept)
    assert isinstance(fields, dict) and isinstance(url, str)
    marked = [
        v[NOT_KEPT] for v in (fields, *fields.values()) if isinstance(v, dict) and NOT_KEPT in v
    ]
    assert marked and all(m["reason"] and len(m["repr"]) <= 2_000 for m in marked)
    with pytest.raises(InvalidResult, match="only a description of it was kept"):
        ResultMapper({"size": "extra_size"}).remap(kept)


def test_kept_fields_map_again_to_what_the_item_maps_to() -> None:
    """Values JSON carries only after conversion are kept converted, and map again to the same result."""
    item = FileItem(
        url=None,
        crawled_at=WHEN,
        description=Decimal("1.50"),
        size={"tags": {"b", "a"}, "blob": b"\xff\xfe", "when": WHEN, "big": 2**70, "n": (1, 2.5)},
    )
    bad = ResultMapper()
    assert reason_of(bad, item) == "url is missing"
    url, kept = bad.keep(item)
    assert url == ""
    fixed = {**dict(item), "url": URL}
    assert bad.remap(orjson.dumps({**orjson.loads(kept), "url": URL})) == bad.to_result(fixed)
    assert orjson.loads(kept)["size"]["tags"] == ["a", "b"]  # real JSON, not a repr


def test_an_invalid_row_keeps_its_url_and_maps_again_with_another_field_map() -> None:
    item = {"file_url": "https://example.com/a.mp3", "url": "ftp://example.com/a.mp3", "page": 3}
    url, kept = ResultMapper().keep(item)
    assert url == "ftp://example.com/a.mp3"
    with pytest.raises(InvalidResult, match="not an absolute http"):
        ResultMapper().remap(kept)
    mapper = ResultMapper({"file_url": "url", "url": "old_url"})
    assert mapper.keep(item)[0] == "https://example.com/a.mp3"
    assert mapper.remap(kept)["extra"] == {"old_url": "ftp://example.com/a.mp3", "page": 3}


def test_a_value_not_kept_is_described_and_marked(mapper: ResultMapper) -> None:
    _, kept = mapper.keep({"url": "nope", "thing": object(), "fine": [1]})
    fields = orjson.loads(kept)
    assert fields["fine"] == [1]
    assert fields["thing"][NOT_KEPT]["type"] == "object"
    assert (
        fields["thing"][NOT_KEPT]["reason"]
        == "extra field 'thing' is not JSON-serializable: object"
    )
    assert fields["thing"][NOT_KEPT]["repr"].startswith("<object object at")
    with pytest.raises(InvalidResult) as info:
        ResultMapper({"thing": "url"}).remap(kept)
    assert (
        info.value.reason
        == "extra field 'thing' is not JSON-serializable: object (only a description of it was kept)"
    )


def test_a_row_an_older_version_kept_as_a_repr_stays_invalid(mapper: ResultMapper) -> None:
    legacy = b"{'url': 'not a url', 'price': Decimal('1')}"
    assert kept_fields(legacy)[NOT_KEPT]["repr"] == legacy.decode()
    with pytest.raises(InvalidResult, match="an older scrapy_sdi kept only a description"):
        mapper.remap(legacy)
