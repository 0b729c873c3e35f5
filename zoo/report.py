"""``python -m zoo.report <sweep dir>``: the report command's old name, kept working (zoo.train.report)."""

import sys

from zoo.train.report.comparison import main

if __name__ == "__main__":
    sys.exit(main())
