"""`python -m bot` is the same as the `quota-bot` console script."""

import sys

from adapters.cli.main import main

sys.exit(main())
