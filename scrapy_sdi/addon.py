"""The scrapy_sdi add-on: ``ADDONS = {"scrapy_sdi.Addon": 500}`` enables both components.

Cheap to import: the components are imported only when Scrapy applies the add-on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

#: Where the add-on puts the pipeline in ITEM_PIPELINES and the extension in EXTENSIONS.
PIPELINE_PRIORITY = 800
STATUS_PRIORITY = 500


class Addon:
    """Adds ``SDIPipeline`` at 800 to ``ITEM_PIPELINES`` and ``SDIStatus`` at 500 to ``EXTENSIONS``.

    A component the user already listed — by ``scrapy_sdi.SDIPipeline``, by its full path
    ``scrapy_sdi.pipeline.SDIPipeline`` or by the class itself, at any priority or as ``None``
    to disable it — is left exactly as given, so it is never registered twice.
    ``SDI_ENABLED = False`` still switches both off.
    """

    def update_settings(self, settings: BaseSettings) -> None:
        from scrapy_sdi.extension import SDIStatus
        from scrapy_sdi.pipeline import SDIPipeline

        settings.setdefault_in_component_priority_dict(
            "ITEM_PIPELINES", SDIPipeline, PIPELINE_PRIORITY
        )
        settings.setdefault_in_component_priority_dict("EXTENSIONS", SDIStatus, STATUS_PRIORITY)
