"""python -m fastwhisper ...: the same as the `fastwhisper` command."""

import sys

from .cli import main

sys.exit(main())
