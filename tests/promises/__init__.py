"""The promise suite: one module per guarantee in docs/delivery.md ("How delivery works").

Each test's only job is to break its promise — real crawls (``tests.support.crawl.run_crawl``,
or ``tests.reliability.harness`` for kills), the reference server and its fault switches
(``sdi_server`` / ``sdi_server_factory``), real SQLite files — and it asserts the promise itself
(what the API stored, what was sent, what was printed), never the mechanism that keeps it.

Modules: ``test_lost`` (no result lost), ``test_stored_twice`` (none stored twice),
``test_filtered_never_sent``, ``test_backlog_bound``, ``test_close_timeout``, ``test_secrets``,
``test_bad_settings``, ``test_bad_items``, and ``test_state_machine`` (hypothesis).
"""
