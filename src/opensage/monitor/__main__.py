"""``python -m opensage.monitor``: the model-monitor analyzer image's entry point."""

import sys

from opensage.monitor.analyzer import main

if __name__ == "__main__":
    sys.exit(main())
