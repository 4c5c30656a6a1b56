"""What mapping one item costs (map, validate, id, encode), per item type, on one core.

    python benchmarks/bench_mapping.py [--items 20000] [--rounds 7] [--baseline GITREF] [--smoke]

Items have the typical shape: the contract's five text fields as short strings, no crawled_at,
as a dict, a scrapy.Item, a dataclass and an attrs instance. ``--baseline main`` imports
``scrapy_sdi/mapping.py`` as it is at that git ref beside the working tree's, and times the two
in alternation in this one process (the fair comparison on a shared, noisy machine); the figure
printed is the best round of each, in µs per item.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout, uninstalled

from baseline import load_baseline  # noqa: E402

from scrapy_sdi import mapping as current  # noqa: E402
from tests.support.items import FileAttrs, FileDataclass, FileItem  # noqa: E402

FIELDS = {
    "url": "https://example.com/media/2026/file-{}.mp3",
    "filename": "file-{}.mp3",
    "referrer": "https://example.com/media/",
    "description": "Auto-detected sample",
    "uploader": "DetectorBot",
}
KINDS: dict[str, Callable[..., Any]] = {
    "dict": dict,
    "scrapy.Item": FileItem,
    "dataclass": FileDataclass,
    "attrs": FileAttrs,
}


def make_items(kind: str, n: int) -> list[Any]:
    build = KINDS[kind]
    return [build(**{k: v.format(i) for k, v in FIELDS.items()}) for i in range(n)]


def per_item(module: ModuleType, dedup: bool) -> Callable[[Any], bytes]:
    """The pipeline's mapping work for one item, with whatever API ``module`` offers."""
    mapper = module.ResultMapper()
    new_id, stable_id = module.new_result_id, module.stable_result_id
    if hasattr(mapper, "draft"):  # the result with an id slot, filled once the id is chosen
        draft, encode_draft = mapper.draft, module.encode_draft

        def fast(item: Any) -> bytes:
            result = draft(item)
            url = result["url"]
            return encode_draft(result, stable_id("MyCrawler", url) if dedup else new_id())

        return fast
    to_result, encode_result = mapper.to_result, module.encode_result

    def full(item: Any) -> bytes:
        result = to_result(item)
        return encode_result(result, stable_id("MyCrawler", result["url"]) if dedup else new_id())

    return full


def time_once(work: Callable[[Any], bytes], items: list[Any]) -> float:
    start = time.perf_counter()
    for item in items:
        work(item)
    return (time.perf_counter() - start) / len(items) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--baseline", metavar="GITREF", help="compare with mapping.py at GITREF")
    parser.add_argument("--smoke", action="store_true", help="a tiny run that only checks it works")
    args = parser.parse_args()
    if args.smoke:
        args.items, args.rounds = 200, 1
    versions: list[tuple[str, ModuleType]] = [("now", current)]
    if args.baseline:
        versions.insert(0, (args.baseline, load_baseline(args.baseline, "mapping")))
    print(f"Python {sys.version.split()[0]}, {args.items} items x {args.rounds} rounds, µs/item")
    for dedup in (False, True):
        for kind in KINDS:
            items = make_items(kind, args.items)
            works = [(name, per_item(module, dedup)) for name, module in versions]
            best = {name: float("inf") for name, _ in works}
            for _ in range(args.rounds):  # alternate, so drift hits both alike
                for name, work in works:
                    best[name] = min(best[name], time_once(work, items))
            figures = "  ".join(f"{name} {best[name]:6.2f}" for name, _ in works)
            label = f"{kind}{' +dedup id' if dedup else ''}"
            ratio = ""
            if len(works) == 2:
                ratio = f"  ({best['now'] / best[works[0][0]]:.2f}x)"
            print(f"  {label:24s} {figures}{ratio}")
    url = "https://example.com/media/2026/file.mp3"
    best = {name: float("inf") for name, _ in versions}
    for _ in range(args.rounds):
        for name, module in versions:
            sid = module.stable_result_id
            start = time.perf_counter()
            for _ in range(args.items):
                sid("MyCrawler", url)
            took = (time.perf_counter() - start) / args.items * 1e9
            best[name] = min(best[name], took)
    figures = "  ".join(f"{name} {best[name]:6.0f}" for name, _ in versions)
    print(f"  {'stable_result_id (ns)':24s} {figures}")


if __name__ == "__main__":
    main()
