"""``python -m dfflab``: the same as the ``dfflab`` command."""

import sys

from dfflab.cli import main

sys.exit(main())
