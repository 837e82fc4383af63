"""``python -m receipt_verifier._cli``: the same as ``receipt-verify``."""

import sys

from . import main

sys.exit(main())
