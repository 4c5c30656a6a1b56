"""How fast scrapy_sdi.filters compiles long filter lists and checks results, on one core.

    python benchmarks/bench_filters.py [--domains 100000 --regex 1000 --glob 1000
                                        --prefix 1000 --results 200000] [--no-re2] [--smoke]
                                       [--baseline GITREF [--rounds 5]]

Prints the figures against the targets (compile < 2 s, >= 250,000 results/s). A missed
target is reported, not failed: this is a benchmark, not a test. ``--baseline main`` also
loads ``scrapy_sdi/filters.py`` as it is at that git ref and times both matchers in
alternation in this one process (best round of each), the fair comparison on a noisy machine.
"""

from __future__ import annotations

import argparse
import random
import string
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout, uninstalled

from baseline import load_baseline  # noqa: E402

from scrapy_sdi import filters as sdi_filters  # noqa: E402

TARGET_COMPILE_S = 2.0
TARGET_RESULTS_PER_S = 250_000  # issue #20
_WORDS = ["private", "tmp", "cache", "session", "admin", "backup", "draft", "media", "static"]


def _word(rng: random.Random, n: int = 8) -> str:
    return "".join(rng.choices(string.ascii_lowercase, k=n))


def _host(rng: random.Random) -> str:
    return f"{_word(rng, rng.randint(4, 12))}.{rng.choice(['com', 'org', 'net', 'example'])}"


def make_filters(rng: random.Random, domains: int, regex: int, glob: int, prefix: int) -> list:
    """Filters shaped like a real list: mostly domains, a few hundred of each other kind."""
    raw = []

    def add(field: str, kind: str, pattern: str) -> None:
        raw.append({"id": len(raw) + 1, "field": field, "kind": kind, "pattern": pattern})

    for _ in range(domains):
        add("url", "domain", _host(rng))
    for _ in range(regex):
        word, other = rng.choice(_WORDS), _word(rng, 5)
        add(
            rng.choice(["url", "filename"]),
            "regex",
            rng.choice(
                [
                    f"/{word}/{other}",
                    rf"{other}\d{{2,4}}\.{rng.choice(['mp3', 'zip', 'pdf'])}$",
                    rf"(?i)^https?://[^/]+/{other}/",
                    rf"[?&]{other}=\w+",
                    rf"{word}-(?:{other}|{_word(rng, 4)})-\d+",
                ]
            ),
        )
    for _ in range(glob):
        add("filename", "glob", f"*{_word(rng, 6)}*.{rng.choice(['tmp', 'part', 'bak'])}")
    for _ in range(prefix):
        add("url", "prefix", f"https://{_host(rng)}/{_word(rng, rng.randint(2, 10))}/")
    rng.shuffle(raw)
    return raw


def make_results(rng: random.Random, count: int) -> list[tuple[str, str]]:
    """Results from a pool of hosts; most match nothing, as on a real crawl."""
    hosts = [_host(rng) for _ in range(2000)]
    results = []
    for _ in range(count):
        path = "/".join(_word(rng, rng.randint(3, 9)) for _ in range(rng.randint(1, 4)))
        filename = f"{_word(rng, rng.randint(4, 12))}.{rng.choice(['mp3', 'zip', 'pdf', 'tmp'])}"
        results.append(
            (
                f"https://www.{rng.choice(hosts)}/{path}/{filename}?id={rng.randint(1, 9999)}",
                filename,
            )
        )
    return results


def run(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    raw = make_filters(rng, args.domains, args.regex, args.glob, args.prefix)
    results = make_results(rng, args.results)
    use_re2 = not args.no_re2 and sdi_filters.re2 is not None

    # CPU time of this process: the figure for one core, even on a busy machine.
    start = time.process_time()
    fs = sdi_filters.compile_filters(raw, "bench", use_re2=use_re2)
    compile_s = time.process_time() - start

    match = fs.match
    start = time.process_time()
    matched = sum(1 for url, filename in results if match(url, filename) is not None)
    per_s = len(results) / (time.process_time() - start)

    empty = sdi_filters.compile_filters([])
    start = time.process_time()
    for url, filename in results:
        empty.match(url, filename)
    empty_ns = (time.process_time() - start) / len(results) * 1e9

    print(f"engine: {'re2 + re fallback' if use_re2 else 're only'}")
    print(
        f"filters: {fs.count} usable, {len(fs.skipped)} skipped "
        f"({args.domains} domain, {args.regex} regex, {args.glob} glob, {args.prefix} prefix)"
    )
    print(
        f"compile: {compile_s:.3f} s CPU (target < {TARGET_COMPILE_S:g} s) {_verdict(compile_s < TARGET_COMPILE_S)}"
    )
    print(
        f"match: {per_s:,.0f} results/s, {1e6 / per_s:.2f} us each (target >= {TARGET_RESULTS_PER_S:,}/s) "
        f"{_verdict(per_s >= TARGET_RESULTS_PER_S)}; {matched} of {len(results)} matched"
    )
    print(f"empty set: {empty_ns:.0f} ns per result")


def compare(args: argparse.Namespace) -> None:
    """Match the same results with the baseline's filters and this tree's, in alternation."""
    rng = random.Random(args.seed)
    raw = make_filters(rng, args.domains, args.regex, args.glob, args.prefix)
    results = make_results(rng, args.results)
    versions = [(args.baseline, load_baseline(args.baseline, "filters")), ("now", sdi_filters)]
    use_re2 = not args.no_re2 and sdi_filters.re2 is not None
    matchers = [
        (name, module.compile_filters(raw, "bench", use_re2=use_re2).match)
        for name, module in versions
    ]
    best = {name: 0.0 for name, _ in matchers}
    found = {}
    for _ in range(args.rounds):
        for name, match in matchers:
            start = time.process_time()
            found[name] = [match(url, filename) for url, filename in results]
            best[name] = max(best[name], len(results) / (time.process_time() - start))
    same = [None if f is None else f.id for f in found["now"]] == [
        None if f is None else f.id for f in found[args.baseline]
    ]
    figures = "  ".join(f"{name} {best[name]:,.0f}/s" for name, _ in matchers)
    print(
        f"match, best of {args.rounds} rounds in alternation: {figures} "
        f"({best['now'] / best[args.baseline]:.2f}x); same answers: {same}"
    )


def _verdict(ok: bool) -> str:
    return "OK" if ok else "MISSED"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domains", type=int, default=100_000)
    parser.add_argument("--regex", type=int, default=1000)
    parser.add_argument("--glob", type=int, default=1000)
    parser.add_argument("--prefix", type=int, default=1000)
    parser.add_argument("--results", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-re2", action="store_true", help="force Python's re for every pattern")
    parser.add_argument("--smoke", action="store_true", help="small numbers, for CI")
    parser.add_argument("--baseline", metavar="GITREF", help="compare with filters.py at GITREF")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of --baseline")
    args = parser.parse_args(argv)
    if args.smoke:
        args.domains, args.regex, args.glob, args.prefix, args.results = 1000, 20, 20, 20, 2000
    run(args)
    if args.baseline:
        compare(args)


if __name__ == "__main__":
    main()
