"""``python -m opensage.images.framework train``: the training toolkit for framework images."""

from __future__ import annotations

import sys

from opensage.images.framework.toolkit import train


def main() -> int:
    if sys.argv[1:] != ["train"]:
        print("usage: python -m opensage.images.framework train", file=sys.stderr)
        return 2
    return train()


if __name__ == "__main__":
    sys.exit(main())
