"""`PYTHONPATH=bench python3 -m kvqbench [options]`, as bench/run.sh runs it."""

import sys

from .cli import main

sys.exit(main())
