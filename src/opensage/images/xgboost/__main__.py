import sys

if len(sys.argv) < 2 or sys.argv[1] != "train":
    print("usage: python -m opensage.images.xgboost train", file=sys.stderr)
    sys.exit(2)

from opensage.images.xgboost.train import main  # noqa: E402

sys.exit(main())
