"""``python -m tests.support.scrapy_strict <scrapy args>``: the scrapy command, deprecations as errors.

``python -W error::scrapy.exceptions.ScrapyDeprecationWarning`` is ignored by Python (the module
is not imported when -W is read), so the filter is installed here before Scrapy runs.
"""

import warnings

from scrapy.cmdline import execute
from scrapy.exceptions import ScrapyDeprecationWarning

if __name__ == "__main__":
    warnings.filterwarnings("error", category=ScrapyDeprecationWarning)
    execute()
