"""Entry point of ``python -m us8k_lib``."""

import sys

from us8k_lib.cli.parser import main

sys.exit(main())
