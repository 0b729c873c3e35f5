"""``python -m zoo.train.report <sweep dir>``: rebuild a sweep's comparison.md and comparison.png."""

import sys

from .comparison import main

sys.exit(main())
