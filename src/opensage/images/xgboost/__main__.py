"""``python -m opensage.images.xgboost train``: the image's training entry point."""

import logging
import os
import sys


def _main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1] != "train":
        print("usage: python -m opensage.images.xgboost train", file=sys.stderr)
        return 2
    # xgboost imports scikit-learn when it is installed (about 1.3 s) only to offer its sklearn API, which
    # the algorithm never uses: mark it absent in this process so that a job starts in well under a second.
    sys.modules.setdefault("sklearn", None)  # type: ignore[arg-type]
    from opensage.images.xgboost.train import main

    return main()


def _exit(code: int) -> None:
    """End the process once its output is flushed, without the interpreter's teardown.

    The job's files are written and closed by now; freeing XGBoost's and NumPy's memory module by
    module only delays the exit that the platform waits for (about 0.1 s).
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    _exit(_main(sys.argv))
