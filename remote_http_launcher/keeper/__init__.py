"""The tunnel keeper: a detached process per tunnelled key that keeps its SSH tunnel.

  start.py     the front half, in the caller's process: start the keeper, relay its one result line
  process.py   the keeper process (`python -m remote_http_launcher.keeper`): log in, serve, watch
  lock.py      at most one keeper per key: the keeper lock and who holds it
  stop.py      stopping a keeper, only once verified as ours
  tunnel.py    the local port forwards over the keeper's SSH connection
  watchdog.py  the service and link checks that end or restore the tunnel

Kept free of imports: the warm path and `python -m` load this package first.
"""
