"""``python -m xmodality_lite``: see :mod:`xmodality_lite.cli`."""

import sys

from xmodality_lite.cli import main

sys.exit(main())
