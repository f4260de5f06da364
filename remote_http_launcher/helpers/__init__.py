"""The `rhl-*` helper commands that 0.4.5 shipped and Seamless's `seamless-service-*` commands run (on the
client and, over ssh, on the server), over this launcher's state files: same arguments, output and exit codes.

  common.py          what they share: state paths, key checks, NDJSON and table output, one-line errors
  ps.py              rhl-ps: server status files (PIDs checked) or, with --client, connection files
  ps_persistent.py   rhl-ps-persistent: whether persistent service directories are absent, empty or populated
  logs.py            rhl-logs: a key's service log
  inspect.py         rhl-inspect: a key's status file, pretty-printed
  stop.py            rhl-stop: stop keys' services (identity-checked), keep their status files marked stale
  rm.py              rhl-rm: remove keys' client and/or server state files
  clear.py           rhl-clear: empty a persistent service directory
"""
