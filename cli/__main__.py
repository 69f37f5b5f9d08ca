"""`python -m cli VERB ...`: the kd command (what torchrun starts in each process of a DDP run)."""

import sys

from cli.main import main

sys.exit(main())
