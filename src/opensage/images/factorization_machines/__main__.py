"""``python -m opensage.images.factorization_machines train``: the image's training entry point."""

import sys
from collections.abc import Callable

from opensage.images import tabular


def _train() -> Callable[[tabular.Job], None]:
    from opensage.images.factorization_machines.train import train

    return train


if __name__ == "__main__":
    tabular.entry(sys.argv, "opensage.images.factorization_machines", _train)
