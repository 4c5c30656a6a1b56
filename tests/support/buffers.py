"""A third-party buffer, as a user would plug one in through SDI_BUFFER."""

from scrapy_sdi.buffer import MemoryBuffer


class RecordingBuffer(MemoryBuffer):
    """A memory buffer that also counts its enqueue calls, to prove it was the one used."""

    calls = 0

    def enqueue(self, rows, dedup):
        type(self).calls += 1
        return super().enqueue(rows, dedup)
