"""`python -m nslab.cli`, as `nslab`."""

import sys

from . import main

sys.exit(main())
