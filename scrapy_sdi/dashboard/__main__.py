"""``python -m scrapy_sdi.dashboard --buffer PATH [--port 8760] [--bind 127.0.0.1] [--allow-actions]``."""

from __future__ import annotations

import argparse
import sys

from scrapy_sdi.dashboard import add_arguments, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scrapy_sdi.dashboard",
        description="Serve the scrapy_sdi dashboard for one buffer file.",
    )
    parser.add_argument(
        "--buffer", required=True, metavar="PATH", help="the SQLite buffer file (SDI_BUFFER_PATH)"
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

    try:
        settings = SDISettings.from_settings(
            Settings(
                {
                    "SDI_BUFFER_PATH": opts.buffer,
                    "SDI_API_URL": opts.api_url,
                    "SDI_BUFFER": "sqlite",
                }
            ),
            require_api=False,
        )
    except SDIConfigError as exc:
        print(f"SDI dashboard: {exc}", file=sys.stderr)
        return 1
    return run(settings, opts)


if __name__ == "__main__":
    sys.exit(main())
