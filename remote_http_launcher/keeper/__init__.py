"""The tunnel keeper: a detached process per tunnelled key that keeps its SSH tunnel (without a broker).

  start.py     the front half, in the caller's process: start the keeper, relay its one result line
  process.py   the keeper process (`python -m remote_http_launcher.keeper`): log in, serve, watch

It hosts the tunnel core (tunnels/) on a connection of its own.
Kept free of imports: the warm path and `python -m` load this package first.
"""
