"""``python -m opensage.images.ipinsights train``: the image's training entry point."""

import sys
from collections.abc import Callable

from opensage.images import tabular


def _train() -> Callable[[tabular.Job], None]:
    from opensage.images.ipinsights.train import train

    return train


if __name__ == "__main__":
    tabular.entry(sys.argv, "opensage.images.ipinsights", _train)
