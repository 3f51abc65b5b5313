import sys

from opensage.cli import main

sys.exit(main())
