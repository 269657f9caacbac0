"""`python -m gateway`: the same program as `p1-gateway`."""

import sys

from gateway.cli import main

sys.exit(main())
