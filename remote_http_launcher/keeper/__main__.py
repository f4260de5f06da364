"""`python -m remote_http_launcher.keeper`: the keeper process's entry point (started by keeper/start.py)."""

import sys

from ..ssh import dialahead

dialahead.dial_from_arguments(sys.argv[1:])  # first: the TCP handshake overlaps the imports below

from .process import main  # noqa: E402

raise SystemExit(main())
