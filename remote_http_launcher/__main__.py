"""`python -m remote_http_launcher`: the command line."""

from .cli import console_main

console_main()
