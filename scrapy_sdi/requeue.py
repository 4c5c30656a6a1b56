"""Putting rows back to pending: rejected rows as they are, invalid rows only once mapped again.

A rejected row holds a result the API refused; sending it again as it is may succeed (the API
changed its mind). An invalid row holds its item's fields, not a result (``ResultMapper.keep``):
sending it as stored would post something that is not a result. So it is mapped and validated
again with the current ``SDI_FIELD_MAP``, exactly as the pipeline would map the item: a result
becomes pending under the id the pipeline would give it, anything else stays invalid with the new
reason. ``scrapy sdi requeue`` and the dashboard both requeue through :func:`requeue`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from scrapy_sdi.buffer import INVALID, PENDING, Row
from scrapy_sdi.mapping import (
    InvalidResult,
    ResultMapper,
    encode_result,
    new_result_id,
    stable_result_id,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from scrapy_sdi.buffer import Buffer


@dataclass(frozen=True)
class Requeued:
    """What a requeue did: rows now pending, and invalid rows that stay invalid (with a new reason)."""

    requeued: int
    still_invalid: int = 0


def requeue(
    buffer: Buffer,
    state: str,
    *,
    field_map: Mapping[str, str] | None = None,
    dedup: bool = True,
    crawler: str | None = None,
    ids: Sequence[str] | None = None,
) -> Requeued:
    """Put the rows of ``state`` (of ``crawler``, among ``ids``) back to pending, invalid ones mapped again."""
    if state != INVALID:
        return Requeued(buffer.requeue(state, crawler, ids))
    mapper = ResultMapper(field_map=field_map)
    rows = {
        row["id"]: _remapped(mapper, row, dedup) for row in buffer.export(INVALID, crawler, ids=ids)
    }
    states: Counter[str] = buffer.replace_invalid(rows, dedup)
    return Requeued(states[PENDING], states[INVALID])


def _remapped(mapper: ResultMapper, row: dict[str, Any], dedup: bool) -> Row:
    """An invalid row mapped again: pending with its result, or invalid with the new reason.

    The id follows the pipeline's rule: derived from (crawler, url) with SDI_DEDUP, else new.
    """
    crawler = row["crawler"]
    try:
        result = mapper.remap(bytes(row["payload"]))
        result_id = stable_result_id(crawler, result["url"]) if dedup else new_result_id()
        return Row(result_id, crawler, result["url"], encode_result(result, result_id))
    except InvalidResult as exc:
        return Row(row["id"], crawler, row["url"], row["payload"], INVALID, exc.reason)
