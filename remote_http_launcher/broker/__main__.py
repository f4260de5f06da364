"""`python -m remote_http_launcher.broker`: the broker process's entry point (started by broker/client.py)."""

import sys

from ..ssh import dialahead

dialahead.dial_from_arguments(sys.argv[1:])  # first: the TCP handshake overlaps the imports below

from .server import main  # noqa: E402

raise SystemExit(main())
