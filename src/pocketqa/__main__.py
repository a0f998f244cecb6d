"""``python -m pocketqa`` (and ``torchrun -m pocketqa train ...``)."""

import sys

from pocketqa.cli.main import main

sys.exit(main())
