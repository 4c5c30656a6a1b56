"""Turn any Scrapy item into one contract result, validated, on the crawl's hot path.

A result is the dict the SDI API expects under ``results`` (see the wire contract, "Submitting
crawler results"): ``url``, ``filename``, ``referrer``, ``description``, ``uploader``,
``crawled_at`` and ``extra``. Anything that could not be delivered as is (no usable url, values
JSON cannot carry, fields too large) raises :class:`InvalidResult` here, once, with a one-line
reason, instead of failing a whole batch at the server.

Decisions worth knowing:

* ``filename`` defaults to the last segment of the URL path, percent-decoded (the query string is
  not part of it). When the path is empty or ends with ``/`` the host is used instead
  (``https://example.com/`` -> ``example.com``), so the required field is never empty. A segment
  whose decoded form would hold a control character keeps its percent-encoding.
* ``crawled_at`` is always sent in the contract form ``YYYY-MM-DDTHH:MM:SSZ``: datetimes (naive
  ones are taken as UTC), ISO-8601 strings and POSIX timestamps are converted to it; a missing
  value means now.
* In ``extra``: datetimes become ISO-8601 UTC strings ending in ``Z`` (full precision), dates and
  times ISO strings, ``Decimal`` and integers beyond 64 bits strings (lossless), bytes their UTF-8
  text or, if not valid UTF-8, their standard base64 (a reader cannot tell the two apart: keep
  binary data out of items if that matters), sets/tuples lists, nested items dicts. NaN and
  infinities, and objects of any other type, are invalid.
* Strings holding lone surrogates cannot be encoded as UTF-8: such an item is invalid (no lossy
  conversion is attempted).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import math
import os
import re
import reprlib
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime, timezone
from datetime import time as dtime
from decimal import Decimal
from functools import partial
from typing import Any
from urllib.parse import unquote, urlsplit
from uuid import UUID

import orjson
from itemadapter import ItemAdapter
from itemadapter.adapter import AttrsAdapter, DataclassAdapter
from scrapy import Item

from scrapy_sdi.errors import SDIConfigError
from scrapy_sdi.formatting import iso

__all__ = [
    "CONTRACT_FIELDS",
    "NOT_KEPT",
    "InvalidResult",
    "ResultMapper",
    "encode_batch",
    "encode_draft",
    "encode_result",
    "kept_fields",
    "new_result_id",
    "stable_result_id",
]

#: The fields of a result, in the order they are sent (``id`` is added by :func:`encode_result`).
CONTRACT_FIELDS = ("url", "filename", "referrer", "description", "uploader", "crawled_at", "extra")
_OPTIONAL_TEXT = ("referrer", "description", "uploader")

DEFAULT_MAX_FIELD_BYTES = 1024 * 1024
DEFAULT_MAX_DEPTH = 32
#: The reference server takes at most 5 MB per batch; one result must leave room for the envelope.
DEFAULT_MAX_RESULT_BYTES = 4_000_000
_MAX_DEPTH_LIMIT = 200  # orjson refuses nesting beyond 254 levels; stay well below it.

_UTC = timezone.utc
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # what orjson can encode as a JSON integer
_SHOW = 80

# Well-formed absolute http(s) URLs with a plain host and no port, userinfo or whitespace: the
# common case, checked with one regex. Everything else takes the slower urlsplit path.
_FAST_URL = re.compile(
    r"[Hh][Tt][Tt][Pp][Ss]?://([A-Za-z0-9.-]+)(/[^?#\x00-\x20\x7f]*)?(?:[?#][^\x00-\x20\x7f]*)?"
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class InvalidResult(ValueError):
    """An item that can never be delivered; ``reason`` says why in one line."""

    def __init__(self, reason: str, field: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        #: The contract field at fault (``"extra"`` for anything inside it), when there is one.
        self.field = field


def _show(value: str) -> str:
    """Quote a value for a reason, cut to about 80 characters."""
    if len(value) <= _SHOW:
        return repr(value)
    return repr(value[:_SHOW]) + "…"


class ResultMapper:
    """Maps items to contract results; built once per crawl from ``SDI_FIELD_MAP``.

    ``field_map`` maps item field names to contract field names (``{"file_url": "url"}``); a
    contract field no item field is mapped to is read from the item field of the same name. An
    item field mapped to a non-contract name is kept in ``extra`` under that name. Every other
    item field goes into ``extra``, skipping None values. An item field mapped to ``extra`` must
    hold a mapping, whose entries are merged into ``extra`` (other fields win on a clash).
    """

    def __init__(
        self,
        field_map: Mapping[str, str] | None = None,
        *,
        max_field_bytes: int = DEFAULT_MAX_FIELD_BYTES,
        max_depth: int = DEFAULT_MAX_DEPTH,
    ) -> None:
        if not isinstance(max_field_bytes, int) or max_field_bytes < 1:
            raise SDIConfigError(
                f"max_field_bytes must be a positive integer, got {max_field_bytes!r}"
            )
        if not isinstance(max_depth, int) or not 1 <= max_depth <= _MAX_DEPTH_LIMIT:
            raise SDIConfigError(
                f"max_depth must be an integer from 1 to {_MAX_DEPTH_LIMIT}, got {max_depth!r}"
            )
        self.max_field_bytes = max_field_bytes
        self.max_depth = max_depth
        sources, self._rename = _read_field_map(field_map or {})
        self._url_key = sources["url"]
        self._filename_key = sources["filename"]
        self._text_keys = tuple((name, sources[name]) for name in _OPTIONAL_TEXT)
        self._crawled_at_key = sources["crawled_at"]
        self._extra_key = sources["extra"]
        self._claimed = frozenset(sources.values())
        #: Item field -> the contract field it becomes (the label of its reasons).
        self._contract_of = {item_field: name for name, item_field in sources.items()}
        #: Items with only these fields have an empty extra (the check that spares a loop).
        self._no_extra = self._claimed - {self._extra_key}
        self._now_second = -1
        self._now_text = ""

    def to_result(self, item: Any) -> dict[str, Any]:
        """Return the contract result for ``item``, or raise :class:`InvalidResult`."""
        result = self.draft(item)
        del result["id"]
        return result

    def draft(self, item: Any) -> dict[str, Any]:
        """The result for ``item`` with an ``id`` slot first, for :func:`encode_draft`.

        The crawl's path: the filters match the url and filename before the id is chosen, and
        the result is encoded with its id without being copied (the same bytes and refusals as
        :func:`encode_result`). Plain ASCII strings within the size limit, the common case, are
        checked inline; the methods called otherwise give the precise reason or the conversion.
        """
        fields = item if type(item) is dict else _fields_of(item)
        get = fields.get
        limit = self.max_field_bytes
        url = get(self._url_key)
        if type(url) is str and url.isascii() and len(url) <= limit:
            where = _FAST_URL.fullmatch(url)
            if where is None:
                url, where = self._url(url)
        else:
            url, where = self._url(url)
        filename = get(self._filename_key)
        if filename is None or filename == "":
            filename = _default_filename(where[1].lower(), where[2] or "")
        elif not (type(filename) is str and filename.isascii() and len(filename) <= limit) or (
            "\x00" in filename
        ):
            filename = self._filename(filename)
        result: dict[str, Any] = {"id": None, "url": url, "filename": filename}
        for name, key in self._text_keys:
            value = get(key)
            if value is not None and not (
                type(value) is str and value.isascii() and len(value) <= limit
            ):
                value = self._text(value, name)
            result[name] = value
        crawled_at = get(self._crawled_at_key)
        result["crawled_at"] = self._now() if crawled_at is None else self._crawled_at(crawled_at)
        result["extra"] = {} if fields.keys() <= self._no_extra else self._extra(fields)
        return result

    def keep(self, item: Any) -> tuple[str, bytes]:
        """What an invalid row keeps of ``item``: its URL (``""`` when it had none) and its fields.

        The fields are a JSON object, so the row can be exported as JSON and mapped again on
        requeue (with another SDI_FIELD_MAP, say). A value JSON cannot carry, or that could never
        be sent (too deep, too big, not serialisable), is kept as a marked description
        (``{NOT_KEPT: ...}``): mapping again finds it still invalid instead of sending a stand-in.
        """
        try:
            fields = _fields_of(item)
        except InvalidResult as exc:  # not an item at all
            return "", orjson.dumps(_not_kept(item, exc.reason))
        kept = dict(self._kept(key, value) for key, value in fields.items())
        url = kept.get(self._url_key)
        url = url[:_KEPT_URL_CHARS] if isinstance(url, str) else ""
        return url, _bounded(kept, DEFAULT_MAX_RESULT_BYTES)

    def _kept(self, key: Any, value: Any) -> tuple[str, Any]:
        """One field as JSON converts it for sending (lossless), or described when it cannot be.

        Its reason names it as mapping names it (``description``, ``extra field 'x'``).
        """
        try:
            name = self._key(key, "the item")
        except InvalidResult as exc:
            return _brief(key), _not_kept(value, exc.reason)
        label = self._contract_of.get(name) or f"extra field {self._rename.get(name, name)!r}"
        try:
            return name, self._json(value, 0, label)
        except InvalidResult as exc:
            return name, _not_kept(value, exc.reason)

    def remap(self, payload: bytes) -> dict[str, Any]:
        """The result of an invalid row's kept fields, or :class:`InvalidResult` with the new reason.

        A field kept only as a description makes the item invalid whatever the field map: every
        field of an item is used (as a contract field or in ``extra``).
        """
        fields = kept_fields(payload)
        for value in (fields, *fields.values()):
            if _is_not_kept(value):
                reason = value[NOT_KEPT].get("reason") or "a value could not be kept"
                raise InvalidResult(f"{reason} (only a description of it was kept)")
        return self.to_result(fields)

    # -- contract fields ---------------------------------------------------------------------

    def _url(self, url: Any) -> tuple[str, Any]:
        """Return the url and where its host and path are: ``where[1]``, ``where[2]``."""
        if url is None:
            raise InvalidResult("url is missing", "url")
        if type(url) is not str:
            if not isinstance(url, str):
                raise InvalidResult(f"url is not a string: {type(url).__name__}", "url")
            url = str.__str__(url)
        url = self._str(url.strip(), "url")
        where = _FAST_URL.fullmatch(url)  # a match object...
        return url, where if where is not None else _slow_url(url)  # ...or a (url, host, path)

    def _filename(self, value: Any) -> str:
        value = self._text(value, "filename")
        if "\x00" in value:
            raise InvalidResult(f"filename contains a NUL byte: {_show(value)}", "filename")
        return value

    def _text(self, value: Any, name: str) -> str:
        """A string field: strings as they are, numbers through str(), anything else invalid."""
        if type(value) is str:
            return self._str(value, name)
        if isinstance(value, str):
            return self._str(str.__str__(value), name)
        if isinstance(value, int) and not isinstance(value, bool):
            return _int_text(int(value), name)
        if isinstance(value, (float, Decimal)):
            return str(value)
        raise InvalidResult(f"{name} is not a string: {type(value).__name__}", name)

    def _str(self, value: str, label: str) -> str:
        """Check a string's UTF-8 size and that it can be encoded at all."""
        if value.isascii():
            size = len(value)
        else:
            try:
                size = len(value.encode())
            except UnicodeEncodeError:
                raise _invalid(
                    f"{label} contains a lone surrogate and cannot be encoded as UTF-8", label
                ) from None
        if size > self.max_field_bytes:
            raise _invalid(
                f"{label} is {size} bytes, over the {self.max_field_bytes}-byte limit", label
            )
        return value

    def _crawled_at(self, value: Any) -> str:
        try:
            if isinstance(value, datetime):
                return _utc_seconds(value)
            if isinstance(value, date):
                return f"{value.isoformat()}T00:00:00Z"
            if isinstance(value, str):
                return _utc_seconds(_parse_iso(value))
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return _utc_seconds(datetime.fromtimestamp(value, _UTC))
        except (ValueError, OverflowError, OSError):
            shown = _show(value) if isinstance(value, str) else _brief(value)
            raise InvalidResult(f"crawled_at is not a valid time: {shown}", "crawled_at") from None
        raise InvalidResult(f"crawled_at is not a time: {type(value).__name__}", "crawled_at")

    def _now(self) -> str:
        """Now in the contract's form, formatted once per second."""
        now = time.time()
        second = int(now)
        if second != self._now_second:
            self._now_text = iso(second)
            self._now_second = second
        return self._now_text

    # -- extra -------------------------------------------------------------------------------

    def _extra(self, fields: Mapping[Any, Any]) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        merged = fields.get(self._extra_key)
        if merged is not None:
            if not isinstance(merged, Mapping):
                raise InvalidResult(f"extra is not a mapping: {type(merged).__name__}", "extra")
            extra.update(self._mapping(merged, 1, "extra"))
        claimed, rename, limit = self._claimed, self._rename, self.max_field_bytes
        for key, value in fields.items():
            if value is None or key in claimed:
                continue
            if not (type(key) is str and key.isascii() and len(key) <= limit):
                key = self._key(key, "extra")
            key = rename.get(key, key)
            kind = type(value)
            if (
                (kind is str and value.isascii() and len(value) <= limit)
                or kind is bool
                or (kind is int and _INT_MIN <= value <= _INT_MAX)
            ):
                extra[key] = value  # the common scalars, checked inline
            else:
                extra[key] = self._json(value, 1, f"extra field {key!r}")
        return extra

    def _json(self, value: Any, depth: int, label: str) -> Any:
        """``value`` as something orjson encodes losslessly; ``label`` names it in reasons."""
        kind = type(value)
        if kind is str:
            return self._str(value, label)
        if kind is int:
            return value if _INT_MIN <= value <= _INT_MAX else _int_text(value, label)
        if kind is bool or value is None:
            return value
        if kind is float:
            if math.isfinite(value):
                return value
            raise _invalid(f"{label} holds a non-finite number: {value}", label)
        if kind is dict:
            return self._mapping(value, self._nest(depth, label), label)
        if kind is list or kind is tuple:
            depth = self._nest(depth, label)
            return [self._json(v, depth, label) for v in value]
        return self._other(value, depth, label)

    def _nest(self, depth: int, label: str) -> int:
        """The depth of a container's members; refuses nesting past ``max_depth`` (and cycles)."""
        if depth > self.max_depth:
            raise _invalid(f"{label} nests deeper than {self.max_depth} levels", label)
        return depth + 1

    def _other(self, value: Any, depth: int, label: str) -> Any:
        """The less common types, and subclasses of the common ones."""
        if isinstance(value, str):
            return self._str(str.__str__(value), label)
        if isinstance(value, bool):
            return bool(value)
        if isinstance(value, int):
            return self._json(int(value), depth, label)
        if isinstance(value, float):
            return self._json(float(value), depth, label)
        if isinstance(value, datetime):
            return _utc_iso(value, label)
        if isinstance(value, (date, dtime)):
            return value.isoformat()
        if isinstance(value, Decimal):
            return str(value)
        if isinstance(value, (bytes, bytearray, memoryview)):
            return self._str(_bytes_text(bytes(value)), label)
        if isinstance(value, UUID):
            return str(value)
        if isinstance(value, Mapping):
            return self._mapping(value, self._nest(depth, label), label)
        if isinstance(value, (list, tuple, set, frozenset)):
            depth = self._nest(depth, label)
            members = _ordered(value) if isinstance(value, (set, frozenset)) else value
            return [self._json(v, depth, label) for v in members]
        if ItemAdapter.is_item(value):
            return self._mapping(_fields_of(value), self._nest(depth, label), label)
        raise _invalid(f"{label} is not JSON-serializable: {type(value).__name__}", label)

    def _mapping(self, value: Mapping[Any, Any], depth: int, label: str) -> dict[str, Any]:
        return {self._key(k, label): self._json(v, depth, label) for k, v in value.items()}

    def _key(self, key: Any, label: str) -> str:
        """JSON object keys are strings: integers are written out, anything else is invalid."""
        if type(key) is str:
            return self._str(key, label)
        if isinstance(key, str):
            return self._str(str.__str__(key), label)
        if isinstance(key, int) and not isinstance(key, bool):
            return _int_text(int(key), label)
        raise _invalid(f"{label} has a key that is not a string: {_brief(key)}", label)


def _invalid(reason: str, label: str) -> InvalidResult:
    """An InvalidResult for a contract field, or for ``extra`` when the label names its content."""
    return InvalidResult(reason, label if label in CONTRACT_FIELDS else "extra")


def _brief(value: Any) -> str:
    """A short repr for a reason, whatever the object does in its __repr__."""
    try:
        text = repr(value)
    except Exception:  # a broken or refused repr (e.g. a huge int) must not hide the reason
        return f"<{type(value).__name__}>"
    return text if len(text) <= _SHOW else text[:_SHOW] + "…"


def _int_text(value: int, label: str) -> str:
    """An integer as decimal text, for values JSON integers cannot carry."""
    try:
        return str(value)
    except ValueError:  # over sys.get_int_max_str_digits()
        raise _invalid(f"{label} holds an integer too long to write out", label) from None


def _read_field_map(field_map: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """Split SDI_FIELD_MAP into contract sources and renames of extra fields."""
    if not isinstance(field_map, Mapping):
        raise SDIConfigError(f"SDI_FIELD_MAP must be a dict, got {field_map!r:.80}")
    sources = {name: name for name in CONTRACT_FIELDS}
    renames: dict[str, str] = {}
    targets: set[str] = set()
    for item_field, target in field_map.items():
        if not isinstance(item_field, str) or not isinstance(target, str) or not target:
            raise SDIConfigError(
                f"SDI_FIELD_MAP entries must map item field names to non-empty field names, "
                f"got {item_field!r:.80}: {target!r:.80}"
            )
        if target == "id":
            raise SDIConfigError("SDI_FIELD_MAP cannot map to 'id': the result id is generated")
        if target in targets:
            raise SDIConfigError(f"SDI_FIELD_MAP maps more than one item field to {target!r}")
        targets.add(target)
        if target in sources:
            sources[target] = item_field
        else:
            renames[item_field] = target
    return sources, renames


#: The key of a field an invalid row could not keep as JSON: ``{NOT_KEPT: {type, reason, repr}}``.
NOT_KEPT = "$sdi_not_kept"
#: The URL column of an invalid row is for people reading the buffer; the full URL is in its fields.
_KEPT_URL_CHARS = 8192


def _not_kept(value: Any, reason: str) -> dict[str, Any]:
    """A value an invalid row cannot keep, described (bounded) and marked, so it is never sent."""
    try:
        text = _ITEM_REPR.repr(value)
    except Exception:  # a repr that fails or recurses
        text = f"<{type(value).__name__} whose repr fails>"
    text = text[:_SHOW_KEPT].encode("utf-8", "backslashreplace").decode("utf-8")
    return {NOT_KEPT: {"type": type(value).__name__, "reason": reason, "repr": text}}


def _is_not_kept(value: Any) -> bool:
    return type(value) is dict and len(value) == 1 and type(value.get(NOT_KEPT)) is dict


def _bounded(kept: dict[str, Any], limit: int) -> bytes:
    """The kept fields as JSON within ``limit`` bytes: the largest are described until they fit.

    An item that large could never be one result (encode_result's limit), so nothing that could
    be sent is lost.
    """
    encoded = orjson.dumps(kept)
    by_size = sorted(kept, key=lambda name: len(orjson.dumps(kept[name])), reverse=True)
    for name in by_size:
        if len(encoded) <= limit:
            break
        kept[name] = _not_kept(kept[name], f"field {name!r} is too large to keep with the item")
        encoded = orjson.dumps(kept)
    return (
        encoded
        if len(encoded) <= limit
        else orjson.dumps(_not_kept(kept, "the item is too large to keep"))
    )


def kept_fields(payload: bytes) -> dict[str, Any]:
    """The fields an invalid row kept (see :meth:`ResultMapper.keep`), as a JSON object.

    Rows an older scrapy_sdi stored hold a Python repr instead: read as one marked description.
    """
    try:
        fields = orjson.loads(payload)
    except orjson.JSONDecodeError:
        fields = None
    if isinstance(fields, dict):
        return fields
    reason = "an older scrapy_sdi kept only a description of this item"
    return {
        NOT_KEPT: {
            "type": "item",
            "reason": reason,
            "repr": bytes(payload).decode("utf-8", "replace"),
        }
    }


_SHOW_KEPT = 2_000
_ITEM_REPR = reprlib.Repr()
_ITEM_REPR.maxlevel = 8
_ITEM_REPR.maxdict = _ITEM_REPR.maxlist = _ITEM_REPR.maxtuple = _ITEM_REPR.maxset = 50
_ITEM_REPR.maxstring = _ITEM_REPR.maxother = _SHOW_KEPT


def _fields_of(item: Any) -> Mapping[Any, Any]:
    """The fields of any item type itemadapter knows (scrapy.Item, dataclass, attrs, ...).

    Types seen before are read by a reader kept for their type: ItemAdapter costs ~3 µs per
    item, which counts once per item; it stays the way in for every type not known here.
    """
    read = _READERS.get(type(item))
    if read is not None:
        return read(item)
    if isinstance(item, Mapping):  # dict subclasses, scrapy.Item: read directly, 2x faster
        _learn(type(item), None)
        return item
    try:
        adapter = ItemAdapter(item)
    except TypeError:
        raise InvalidResult(f"item of type {type(item).__name__} is not a supported item") from None
    _learn(type(item), type(adapter.adapter))
    return dict(adapter)


#: Item type -> what reads its fields as ItemAdapter would, for the types known to be plain.
_READERS: dict[type, Callable[[Any], Mapping[Any, Any]]] = {}
_ITEM_METHODS = ("__getitem__", "__iter__", "__len__", "__contains__", "keys", "items", "get")
_MISSING = object()


def _learn(kind: Any, adapter: type | None) -> None:
    """Keep a reader for ``kind`` when its fields can be read without ItemAdapter."""
    if issubclass(kind, Item):  # a scrapy.Item that reads its fields as Item does
        if any(getattr(kind, name) is not getattr(Item, name) for name in _ITEM_METHODS):
            return
        read: Callable[[Any], Mapping[Any, Any]] = _item_values
    elif adapter is DataclassAdapter:
        read = partial(_attributes, tuple(f.name for f in dataclasses.fields(kind)))
    elif adapter is AttrsAdapter:
        import attr  # present whenever itemadapter picked AttrsAdapter

        read = partial(_attributes, tuple(attr.fields_dict(kind)))
    else:
        return
    if len(_READERS) >= 256:  # item types made on the fly must not grow it forever
        _READERS.clear()
    _READERS[kind] = read


def _item_values(item: Any) -> Mapping[Any, Any]:
    return item._values


def _attributes(names: tuple[str, ...], item: Any) -> dict[str, Any]:
    """A dataclass's or attrs instance's fields as ItemAdapter gives them (unset ones left out)."""
    fields = {}
    for name in names:
        value = getattr(item, name, _MISSING)
        if value is not _MISSING:
            fields[name] = value
    return fields


def _slow_url(url: str) -> tuple[str, str, str]:
    """Validate a URL the fast regex did not take, with a precise reason when it is bad."""
    if "\x00" in url:
        raise InvalidResult(f"url contains a NUL byte: {_show(url)}", "url")
    if _CONTROL.search(url):
        raise InvalidResult(f"url contains a control character: {_show(url)}", "url")
    if not url:
        raise InvalidResult("url is empty", "url")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise InvalidResult(f"url is not a valid URL: {_show(url)}", "url") from None
    if parts.scheme not in ("http", "https") or not host:
        raise InvalidResult(f"url is not an absolute http(s) URL: {_show(url)}", "url")
    if any(c.isspace() for c in parts.netloc):
        raise InvalidResult(f"url has whitespace in its host: {_show(url)}", "url")
    return url, host, parts.path


def _default_filename(host: str, path: str) -> str:
    """The last path segment, percent-decoded; the host when there is none."""
    segment = path.rpartition("/")[2]
    if not segment:
        return host
    if "%" in segment:
        decoded = unquote(segment)
        if not _CONTROL.search(decoded):
            return decoded
    return segment


def _parse_iso(text: str) -> datetime:
    text = text.strip()
    if text[-1:] in ("Z", "z"):  # Python 3.10's fromisoformat does not take "Z"
        text = text[:-1] + "+00:00"
    return datetime.fromisoformat(text)


def _as_utc(value: datetime) -> datetime:
    if value.utcoffset() is None:
        return value.replace(tzinfo=_UTC)
    return value.astimezone(_UTC)


def _utc_seconds(value: datetime) -> str:
    """The contract's time form: 2026-11-22T18:15:51Z (naive datetimes are UTC)."""
    return _as_utc(value).replace(tzinfo=None, microsecond=0).isoformat() + "Z"


def _utc_iso(value: datetime, label: str) -> str:
    """A datetime in extra: ISO-8601 UTC, full precision."""
    try:
        return _as_utc(value).replace(tzinfo=None).isoformat() + "Z"
    except (ValueError, OverflowError):
        raise _invalid(f"{label} holds a datetime outside UTC's range", label) from None


def _bytes_text(value: bytes) -> str:
    try:
        return value.decode()
    except UnicodeDecodeError:
        return base64.b64encode(value).decode("ascii")


def _ordered(values: set[Any] | frozenset[Any]) -> list[Any]:
    """A set's members in a stable order when they can be sorted."""
    try:
        return sorted(values)
    except Exception:  # TypeError, or decimal.InvalidOperation comparing NaN
        return list(values)


def encode_result(
    result: Mapping[str, Any], result_id: str, *, max_bytes: int = DEFAULT_MAX_RESULT_BYTES
) -> bytes:
    """The JSON of one contract result with its ``id``, ready to be joined into a batch body.

    Encoding once per result lets delivery build batches by joining bytes, and a result too
    large for any batch is refused here, at the item, rather than by a 413 forever.
    """
    _check_id(result_id)
    try:
        payload = {"id": result_id, **result}
        payload["id"] = result_id  # a stray "id" in result must not replace the key
        encoded = orjson.dumps(payload)
    except orjson.JSONEncodeError as exc:
        raise InvalidResult(f"result cannot be encoded as JSON: {str(exc)[:_SHOW]}") from None
    return _within(encoded, max_bytes)


def encode_draft(
    result: dict[str, Any], result_id: str, *, max_bytes: int = DEFAULT_MAX_RESULT_BYTES
) -> bytes:
    """:func:`encode_result` for a :meth:`ResultMapper.draft`: its id slot is filled in place."""
    if type(result_id) is not str or not 1 <= len(result_id) <= 128:
        _check_id(result_id)
    result["id"] = result_id
    try:
        encoded = orjson.dumps(result)
    except orjson.JSONEncodeError as exc:
        raise InvalidResult(f"result cannot be encoded as JSON: {str(exc)[:_SHOW]}") from None
    if len(encoded) > max_bytes:
        _within(encoded, max_bytes)
    return encoded


def _check_id(result_id: str) -> None:
    if not isinstance(result_id, str) or not 1 <= len(result_id) <= 128:
        raise InvalidResult(
            f"result id must be a string of 1-128 characters, got {result_id!r:.80}", "id"
        )


def _within(encoded: bytes, max_bytes: int) -> bytes:
    """A result too large for any batch is refused at the item, rather than by a 413 forever."""
    if len(encoded) > max_bytes:
        raise InvalidResult(
            f"result is {len(encoded)} bytes as JSON, over the {max_bytes}-byte limit"
        )
    return encoded


def encode_batch(crawler: str, encoded_results: Sequence[bytes]) -> bytes:
    """The body of ``POST crawler-results`` from results already made by :func:`encode_result`.

    Joining pre-encoded results costs nothing per batch; the crawler name is configuration, so a
    name orjson cannot encode raises ``orjson.JSONEncodeError`` rather than InvalidResult.
    """
    return (
        b'{"crawler":'
        + orjson.dumps(crawler)
        + b',"results":['
        + b",".join(encoded_results)
        + b"]}"
    )


def new_result_id() -> str:
    """A fresh idempotency key: a random UUID4 as 32 hex digits.

    Built from ``os.urandom`` directly: the same bits as ``uuid.uuid4().hex`` at about a third of
    the cost, which counts once per item.
    """
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40  # version 4
    raw[8] = raw[8] & 0x3F | 0x80  # RFC 4122 variant
    return raw.hex()


def stable_result_id(crawler: str, url: str) -> str:
    """The same id for the same (crawler, url), wherever and whenever it is buffered.

    With SDI_DEDUP on, a crawler submits a URL once; deriving the id from that pair extends the
    promise past one buffer file: two workers with their own buffers, a re-crawl after a pruned
    or lost buffer, all send the same id, and the API answers ``duplicate`` instead of storing
    the result twice.
    """
    # blake2b-128 of crawler, NUL, url as UTF-8 (surrogatepass): the crawler's part is hashed
    # once and copied, which halves the cost. The ids must never change: tests pin them.
    prefix = _ID_PREFIXES.get(crawler)
    if prefix is None:
        if len(_ID_PREFIXES) >= 64:
            _ID_PREFIXES.clear()
        prefix = hashlib.blake2b(crawler.encode("utf-8", "surrogatepass") + b"\x00", digest_size=16)
        _ID_PREFIXES[crawler] = prefix
    digest = prefix.copy()
    digest.update(url.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


#: Crawler name -> blake2b of its part of a stable id; only ever copied, never updated.
_ID_PREFIXES: dict[str, Any] = {}
