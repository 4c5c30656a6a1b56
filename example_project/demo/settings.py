# Scrapy settings for the demo project.
#
# It crawls the generated demo site (python -m scrapy_sdi.testing.demo_site) and delivers
# every file link it finds to an SDI crawler-results API through scrapy_sdi.
#
#     https://docs.scrapy.org/en/latest/topics/settings.html

import os
from importlib.util import find_spec

BOT_NAME = "demo"

# The scrapy-redis cluster spider (redis_files) only where scrapy-redis is installed: Scrapy
# imports every spider module at start, and the demo installs scrapy_sdi alone.
SPIDER_MODULES = ["demo.spiders.files"] + (["demo.spiders.redis_files"] if find_spec("scrapy_redis") else [])
NEWSPIDER_MODULE = "demo.spiders"

ADDONS = {}

# The demo site is a local, generated site without a robots.txt.
ROBOTSTXT_OBEY = False

# Where the "files" spider starts; `-a site=URL` overrides it for one run.
DEMO_SITE_URL = os.environ.get("DEMO_SITE_URL", "http://127.0.0.1:8751/")

# --- scrapy_sdi -----------------------------------------------------------------------
# The pipeline buffers every item durably (SDI_BUFFER_PATH, left at its default here) and
# delivers batches to the API; the extension reports delivery progress and status.
ITEM_PIPELINES = {
    "scrapy_sdi.SDIPipeline": 800,
}
EXTENSIONS = {
    "scrapy_sdi.SDIStatus": 500,
}

# Credentials come from the environment; never write a password into this file.
SDI_API_URL = os.environ.get("SDI_API_URL")
SDI_USERNAME = os.environ.get("SDI_USERNAME")
SDI_PASSWORD = os.environ.get("SDI_PASSWORD")

# Set settings whose default value is deprecated to a future-proof value
FEED_EXPORT_ENCODING = "utf-8"
