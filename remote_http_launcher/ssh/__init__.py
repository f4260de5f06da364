"""SSH with paramiko, set up the way OpenSSH would: ~/.ssh/config, jump hosts, host keys, logins.

Imported only for remote configs (paramiko costs ~50 ms to import), so this
file imports nothing. The modules, each importing only those before it:

- `_paramiko`: the one import of paramiko (without `invoke`) and of
  sshtunnel, and every private member of theirs that we use;
- `config`: ~/.ssh/config, resolved into an Endpoint;
- `hostkeys`: known_hosts and OpenSSH's host-key policy;
- `agent`: the ssh-agent a login uses (IdentityAgent: a socket, a Windows pipe, none);
- `ciphers`: the ciphers offered (AES-GCM first; ~/.ssh/config's Ciphers);
- `auth`: logging in (agent, key files, keyboard-interactive, password);
- `dialahead`: a keeper's or broker's TCP connect to the last login's address, made while it imports
  (imports no paramiko);
- `connection`: SSHConnection and `connect` (TCP, ProxyCommand, ProxyJump);
- `sftp`: PipelinedSFTP, SFTP requests in one flight.
"""
