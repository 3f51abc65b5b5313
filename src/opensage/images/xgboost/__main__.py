"""``python -m opensage.images.xgboost train``: the image's training entry point."""

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


if __name__ == "__main__":
    sys.exit(_main(sys.argv))
