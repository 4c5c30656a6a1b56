"""The ``dashboard`` action: runs :mod:`scrapy_sdi.dashboard`, imported only when the action runs.

The dashboard parses its own options (``add_arguments(parser)``, so ``scrapy sdi dashboard --help``
lists them) and serves with ``run(settings: SDISettings, opts) -> int``. Should importing it fail
(a broken install), the action says in one line that it is not available and exits with 1; every
other action works regardless.
"""

from __future__ import annotations

import argparse

from scrapy.commands import ScrapyHelpFormatter

from scrapy_sdi.commands._common import Action, Context, add_global_options


def _dashboard(ctx: Context) -> int:
    try:
        from scrapy_sdi import dashboard

        add_arguments, run = dashboard.add_arguments, dashboard.run
    except (ImportError, AttributeError) as exc:
        ctx.error(f"not available ({exc})")
        return 1
    parser = argparse.ArgumentParser(
        prog="scrapy sdi dashboard",
        description=(dashboard.__doc__ or "").strip() or None,
        formatter_class=ScrapyHelpFormatter,
    )
    add_arguments(parser)
    add_global_options(parser)  # taken before the action's own options, listed by --help
    opts = parser.parse_args(ctx.args, namespace=argparse.Namespace(**vars(ctx.opts)))
    return int(run(ctx.sdi_settings(require_api=False), opts) or 0)


DASHBOARD = Action(
    "dashboard",
    "live view of delivery (scrapy_sdi.dashboard; `scrapy sdi dashboard --help` for its options)",
    lambda parser: None,
    _dashboard,
    json=False,
    passthrough=True,
)
