"""A small, deterministic "file sharing" site on loopback, for the demo and the tests.

Everything is generated in code from two numbers (categories, files per category), so a
complete crawl must find exactly :func:`expected_files`. The index links to every category;
each category lists its files, :data:`PAGE_SIZE` per page, with an uploader and a description
beside each link. File names mix ``.mp3``/``.mp4``/``.zip``/``.pdf``, a few ``.tmp`` ones and
some under ``/private/``, so server-side filters have something to drop. The files themselves
are not served: a spider only reports the links.

Run it with::

    python -m scrapy_sdi.testing.demo_site --port 0 [--categories 5 --files 20]

It prints one line, ``Demo site listening on http://127.0.0.1:PORT/``, then serves until
interrupted.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from html import escape
from typing import TYPE_CHECKING
from urllib.parse import quote

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.web.resource import Resource
from twisted.web.server import Site

if TYPE_CHECKING:
    from twisted.internet.interfaces import IListeningPort, IReactorTCP
    from twisted.web.server import Request

DEFAULT_CATEGORIES = 5
DEFAULT_FILES = 20
#: Files listed per category page; categories with more files are paginated.
PAGE_SIZE = 8
LISTEN_LINE = "Demo site listening on http://{host}:{port}/"

_TOPICS = ("music", "videos", "software", "documents", "podcasts", "lectures", "games", "photos")
_STEMS = ("session", "mix", "release", "backup", "notes", "recording", "bundle", "report")
_EXTENSIONS = ("mp3", "mp4", "zip", "pdf")
_UPLOADERS = ("alice", "bob", "carol", "dave", "erin", "frank", "grace")
_ADJECTIVES = ("Rare", "Remastered", "Unabridged", "Early", "Extended", "Annotated")


@dataclass(frozen=True)
class DemoFile:
    """One listed file: its URL path and what its listing says about it."""

    path: str
    filename: str
    uploader: str
    description: str
    #: Text of the link; "Download" for some, so a spider must fall back to the path.
    link_text: str


@dataclass(frozen=True)
class Category:
    slug: str
    title: str
    files: tuple[DemoFile, ...]

    @property
    def path(self) -> str:
        return f"/category/{self.slug}/"

    @property
    def pages(self) -> int:
        return max(1, -(-len(self.files) // PAGE_SIZE))


def _category_slug(index: int) -> str:
    topic = _TOPICS[index % len(_TOPICS)]
    return topic if index < len(_TOPICS) else f"{topic}-{index // len(_TOPICS) + 1}"


def _make_file(slug: str, title: str, cat: int, number: int) -> DemoFile:
    ext = "tmp" if number % 7 == 5 else _EXTENSIONS[number % len(_EXTENSIONS)]
    filename = f"{slug}-{_STEMS[number % len(_STEMS)]}-{number + 1:03d}.{ext}"
    folder = "private" if number % 9 == 7 else "files"
    adjective = _ADJECTIVES[(cat * 3 + number) % len(_ADJECTIVES)]
    return DemoFile(
        path=f"/{folder}/{slug}/{quote(filename)}",
        filename=filename,
        uploader=_UPLOADERS[(cat + number) % len(_UPLOADERS)],
        description=f"{adjective} {title.lower()} item #{number + 1}",
        link_text="Download" if number % 6 == 2 else filename,
    )


def build_catalog(
    categories: int = DEFAULT_CATEGORIES, files: int = DEFAULT_FILES
) -> list[Category]:
    """The whole site's content, a pure function of its two sizes."""
    if categories < 0 or files < 0:
        raise ValueError(f"categories and files must be >= 0, got {categories} and {files}")
    catalog = []
    for cat in range(categories):
        slug = _category_slug(cat)
        title = slug.replace("-", " ").title()
        catalog.append(
            Category(slug, title, tuple(_make_file(slug, title, cat, n) for n in range(files)))
        )
    return catalog


def expected_files(categories: int = DEFAULT_CATEGORIES, files: int = DEFAULT_FILES) -> list[str]:
    """Sorted URL paths of every file link; a complete crawl finds exactly these."""
    return sorted(f.path for c in build_catalog(categories, files) for f in c.files)


def _page(title: str, body: str, description: str) -> bytes:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)} - DemoShare</title>"
        f'<meta name="description" content="{escape(description)}"></head>\n<body>\n'
        '<nav class="site"><a href="/">Home</a> <a href="/about">About</a> '
        '<a href="https://example.org/partners">Partners</a></nav>\n'
        f"<h1>{escape(title)}</h1>\n{body}\n"
        "<footer>DemoShare - a generated site for scrapy_sdi demos</footer>\n</body></html>\n"
    ).encode()


def _render_index(catalog: list[Category]) -> bytes:
    items = "".join(
        f'<li class="category"><a href="{c.path}">{escape(c.title)}</a> '
        f'<span class="count">{len(c.files)} files</span></li>\n'
        for c in catalog
    )
    return _page(
        "Browse categories",
        f'<ul class="categories">\n{items}</ul>',
        "Browse shared files by category.",
    )


def _render_file(f: DemoFile) -> str:
    return (
        f'<li class="file"><a class="download" href="{escape(f.path)}">{escape(f.link_text)}</a>'
        f' <span class="meta">uploaded by <span class="uploader">{escape(f.uploader)}</span></span>'
        f'<p class="description">{escape(f.description)}</p></li>\n'
    )


def _page_url(category: Category, page: int) -> str:
    """Page 1 has one URL, the category's own, so a crawl sees each listing once."""
    return category.path if page == 1 else f"?page={page}"


def _render_pagination(category: Category, page: int) -> str:
    if category.pages == 1:
        return ""
    links = [
        f'<span class="current">{n}</span>'
        if n == page
        else f'<a href="{_page_url(category, n)}">{n}</a>'
        for n in range(1, category.pages + 1)
    ]
    if page < category.pages:
        next_url = _page_url(category, page + 1)
        links.append(f'<a rel="next" class="next" href="{next_url}">Next &raquo;</a>')
    return '<nav class="pagination">' + " ".join(links) + "</nav>"


def _render_category(category: Category, page: int) -> bytes:
    shown = category.files[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
    listing = "".join(_render_file(f) for f in shown)
    body = f'<ul class="files">\n{listing}</ul>\n{_render_pagination(category, page)}'
    return _page(
        f"{category.title} (page {page} of {category.pages})",
        body,
        f"Files shared in {category.title}.",
    )


class DemoSiteResource(Resource):
    """Serves the whole site from one leaf resource; unknown paths answer 404."""

    isLeaf = True

    def __init__(self, categories: int = DEFAULT_CATEGORIES, files: int = DEFAULT_FILES) -> None:
        super().__init__()
        self._catalog = build_catalog(categories, files)
        self._by_path = {c.path: c for c in self._catalog}

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        path = request.path.decode("utf-8", "replace")
        if path == "/":
            return _render_index(self._catalog)
        if path == "/about":
            return _page("About", "<p>Nothing to download here.</p>", "About DemoShare.")
        category = self._by_path.get(path)
        page = _page_number(request)
        if category is None or page is None or not 1 <= page <= category.pages:
            request.setResponseCode(404)
            return _page("Not found", "<p>No such page.</p>", "Not found.")
        return _render_category(category, page)


def _page_number(request: Request) -> int | None:
    raw = request.args.get(b"page", [b"1"])[0]
    return int(raw) if raw.isdigit() else None


def make_site(categories: int = DEFAULT_CATEGORIES, files: int = DEFAULT_FILES) -> Site:
    return Site(DemoSiteResource(categories, files))


def listen(
    reactor: IReactorTCP,
    port: int = 0,
    *,
    categories: int = DEFAULT_CATEGORIES,
    files: int = DEFAULT_FILES,
    interface: str = "127.0.0.1",
) -> IListeningPort:
    """Start serving on ``interface:port`` (0 picks a free port); stop with ``stopListening()``."""
    # Twisted's annotations: a Site (ServerFactory of HTTP channels) does not match listenTCP's
    # ServerFactory of its default protocol type (Factory is invariant in it); it is one
    return reactor.listenTCP(port, make_site(categories, files), interface=interface)  # type: ignore[arg-type]


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m scrapy_sdi.testing.demo_site",
        description="Serve a small generated file-sharing site on loopback.",
    )
    parser.add_argument("--port", type=int, default=8751, help="TCP port; 0 picks a free one")
    parser.add_argument(
        "--categories",
        type=int,
        default=DEFAULT_CATEGORIES,
        help="number of category pages (default %(default)s)",
    )
    parser.add_argument(
        "--files",
        type=int,
        default=DEFAULT_FILES,
        help="file links per category (default %(default)s)",
    )
    args = parser.parse_args(argv)
    if args.categories < 0 or args.files < 0:
        parser.error("--categories and --files must be >= 0")
    return args


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    from twisted.internet import reactor

    port = listen(reactor, args.port, categories=args.categories, files=args.files)
    address = port.getHost()
    assert isinstance(address, (IPv4Address, IPv6Address)), address  # listenTCP's
    print(LISTEN_LINE.format(host=address.host, port=address.port), flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
