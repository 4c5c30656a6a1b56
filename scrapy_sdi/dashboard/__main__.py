"""``python -m scrapy_sdi.dashboard --buffer PATH [--port 8760] [--bind 127.0.0.1] [--allow-actions]``.

Without ``--buffer``, the PostgreSQL buffer ``$SDI_BUFFER_URL`` names (the environment or
``.env``: a URL holding a password is kept out of the process list).
"""

from __future__ import annotations

import argparse
import sys

from scrapy_sdi.dashboard import add_arguments, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scrapy_sdi.dashboard",
        description="Serve the scrapy_sdi dashboard for one buffer: a SQLite file, or a PostgreSQL database.",
    )
    parser.add_argument(
        "--buffer",
        metavar="PATH",
        help="the SQLite buffer file (SDI_BUFFER_PATH); without it, the PostgreSQL buffer "
        "$SDI_BUFFER_URL names (from the environment or .env)",
    )
    parser.add_argument(
        "--api-url",
        default="",
        metavar="URL",
        help="the API's base URL, for its health and remote statuses (default: $SDI_API_URL); "
        "credentials come from $SDI_USERNAME and $SDI_PASSWORD",
    )
    add_arguments(parser)
    opts = parser.parse_args(argv)

    from scrapy.settings import Settings

    from scrapy_sdi.errors import SDIConfigError
    from scrapy_sdi.settings import SDISettings

    if opts.buffer is not None:
        buffer = {"SDI_BUFFER_PATH": opts.buffer, "SDI_BUFFER": "sqlite"}
    else:
        buffer = {"SDI_BUFFER": "postgres"}
    try:
        settings = SDISettings.from_settings(
            Settings({**buffer, "SDI_API_URL": opts.api_url}), require_api=False
        )
        if settings.buffer == "postgres" and not settings.buffer_url:
            raise SDIConfigError(
                "--buffer: not given, and SDI_BUFFER_URL is not set; pass the buffer file's path, "
                "or set SDI_BUFFER_URL for a PostgreSQL buffer"
            )
    except SDIConfigError as exc:
        print(f"SDI dashboard: {exc}", file=sys.stderr)
        return 1
    return run(settings, opts)


if __name__ == "__main__":
    sys.exit(main())
