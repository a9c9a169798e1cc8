"""`python -m zeta_local` is the `zeta-local` command."""

import sys

from zeta_local.cli import main

sys.exit(main())
