"""The connection broker: one SSH login per destination, shared by every command.

OpenSSH users keep one login with ControlMaster/ControlPersist; paramiko has
nothing like it, so this is ours. After a login, one local process per
(local user, SSH destination) keeps the authenticated connection; commands
for that destination (`up`, `status`, `logs`, `stop`, `list --host`, the
Python API) reach it over a local channel that only the same user can open
(a Unix socket in the 0700 state directory, a named pipe on Windows; each end
checks that the other is a process of its user, and both prove they know an
authkey read from a 0600 file) and have it make their `Host` calls, as JSON
messages (nothing crossing it is unpickled). Nothing listens on the network.

- `registry`: which broker serves a destination; its files and its lock (at most one per destination);
- `protocol`: the wire (size-capped JSON messages, the peer checks, the key proof), requests (Host calls by
  name, from one table) and replies (a value, or the exception);
- `server`: the broker process, its login relayed to the command that started it, its idle exit;
- `session`: one proven client's requests, served on the broker's host and tunnels;
- `client`: finding or starting the broker, `BrokeredHost`, and falling back to a login of our own;
- `tunnels`: each service's tunnel on the broker's link (the tunnel core of tunnels/, per key);
- `control`: `connections` and `disconnect`.

Tunnels: with a broker, `up` runs the launcher in the caller's process through
`BrokeredHost`, and the broker keeps the forwards (the key's keeper lock names
it); without one, a keeper process per tunnel, as before.

`connection_persist` (config field, `--connection-persist` flag; default 600 s)
is how long a broker outlives its last use; 0 means no broker: each command
logs in, as before.
"""
