"""`python -m remote_http_launcher.keeper`: the keeper process's entry point (started by keeper/start.py)."""

from .process import main

raise SystemExit(main())
