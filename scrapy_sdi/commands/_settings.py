"""The ``settings`` action: every SDI_ setting, its type, default, value and where the value came from."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from scrapy_sdi.commands._common import Action, Context, table
from scrapy_sdi.settings import SPEC, SDISettings, masked, needs_buffer_url, shown

_TYPES = {bool: "bool", int: "int", float: "float", str: "str", dict: "dict"}


def _settings(ctx: Context) -> int:
    settings = ctx.sdi_settings(require_api=False)
    values = _values(settings)
    missing = _missing_required(values)
    rows = [
        {
            "name": name,
            "type": _TYPES.get(type(default), type(default).__name__),
            "default": shown(name, default),
            "value": shown(name, values[name]),
            "source": settings.sources.get(name, "default"),
            "missing_required": name in missing,
            "description": doc,
        }
        for name, (default, _parse, doc) in SPEC.items()
    ]
    if ctx.json:
        ctx.print_json({"settings": rows})
        return 0
    table(
        ("setting", "type", "default", "value", "source"),
        [
            (
                name,
                r["type"],
                masked(name, SPEC[name][0]),
                _text(name, values[name], missing),
                r["source"],
            )
            for name, r in zip(SPEC, rows, strict=True)
        ],
    )
    return 0


def _values(settings: SDISettings) -> dict[str, Any]:
    """Each SPEC name's resolved value (a name SDISettings does not carry yet shows its default)."""
    values = {
        "SDI_" + f.name.upper(): getattr(settings, f.name)
        for f in fields(settings)
        if f.name != "sources"
    }
    return {name: values.get(name, default) for name, (default, _parse, _doc) in SPEC.items()}


def _missing_required(values: dict[str, Any]) -> set[str]:
    """The settings a crawl needs that have no value (credentials are not needed for a dry run)."""
    if not values["SDI_ENABLED"]:
        return set()
    needed: tuple[str, ...] = (
        ("SDI_API_URL",)
        if values["SDI_DRY_RUN"]
        else ("SDI_API_URL", "SDI_USERNAME", "SDI_PASSWORD")
    )
    if needs_buffer_url(values):
        needed += ("SDI_BUFFER_URL",)
    return {name for name in needed if not values[name]}


def _text(name: str, value: Any, missing: set[str]) -> str:
    return "(not set, required)" if name in missing else masked(name, value)


SETTINGS = Action(
    "settings",
    "every SDI_ setting: type, default, current value and its source (settings, environment, .env, default)",
    lambda parser: None,
    _settings,
)
