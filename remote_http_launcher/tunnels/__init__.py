"""The tunnel core, hosted by a keeper process (keeper/) or by a connection broker (broker/).

  forward.py   local port forwards over an SSH connection (sshtunnel, tuned for bulk data)
  watch.py     the one watch and reconnect loop: a Link and the tunnels kept on it
  claim.py     at most one tunnel per key: reuse, wait for, or replace the lock's holder
  lock.py      the keeper lock, its markers, and who holds it
  daemon.py    what both daemons share: the JSON-lines relay to the front, their log, detaching

Kept free of imports: what imports a part of it loads no other part.
"""
