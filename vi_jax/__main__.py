"""`python -m vi_jax` runs the command line."""

import sys

from vi_jax.cli import main

sys.exit(main())
