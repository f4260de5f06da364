"""The operations, one module per command, returning data (the CLI, the API and handles are their front ends).

  up.py        the client payload: reuse, reconnect or launch (the warm path starts here)
  status.py    where one service stands, on its host and on this machine
  stop.py      stop the service and its tunnel, remove its state and logs
  logs.py      the tail of a service's log, and following it
  listing.py   every service on a host
  entries.py   what those report of a service: its status file checked against its host

Kept free of imports: the warm path loads this package first.
"""
