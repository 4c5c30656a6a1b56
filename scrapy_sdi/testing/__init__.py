"""Test helpers shipped with scrapy_sdi.

``server`` is a reference implementation of the SDI ingest API (with fault switches), so the
client can be proven over real HTTP; ``pytest_plugin`` starts it as a subprocess fixture;
``demo_site`` is the generated file-sharing site the demo and the tests crawl.
"""
