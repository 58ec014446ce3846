"""``python -m geomrob`` is the ``geomrob`` command."""

import sys

from .cli import main

sys.exit(main())
