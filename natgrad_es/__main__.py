"""``python -m natgrad_es``: the ``natgrad-es`` command (see ``natgrad_es.cli``)."""

import sys

from .cli import main

sys.exit(main())
