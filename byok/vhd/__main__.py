"""`python -m byok.vhd ...` runs the `byok vhd` sub-commands."""

import sys

from byok.vhd.cli import main

sys.exit(main())
