"""``python -m pocketqa`` (and ``torchrun -m pocketqa train ...``)."""

import sys

from .cli import main

sys.exit(main())
