"""``python -m loadtest.gwbench``: see the package docstring."""

import sys

from loadtest.gwbench.cli import main

sys.exit(main())
