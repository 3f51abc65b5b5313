import sys

if len(sys.argv) < 2 or sys.argv[1] != "train":
    print("usage: python -m opensage.images.xgboost train", file=sys.stderr)
    sys.exit(2)

# xgboost imports scikit-learn when it is installed (about 1.3 s) only to offer its sklearn API, which
# the algorithm never uses: mark it absent in this process so that a job starts in well under a second.
sys.modules.setdefault("sklearn", None)  # type: ignore[assignment]

from opensage.images.xgboost.train import main  # noqa: E402

sys.exit(main())
