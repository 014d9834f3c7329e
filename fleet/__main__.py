"""`python -m fleet` is the `fleet` command."""

import sys

from .cli import main

sys.exit(main())
