from __future__ import annotations

import sys

from twostep.cli import main

sys.exit(main())
