"""SSH with paramiko, set up the way OpenSSH would: ~/.ssh/config, jump hosts, host keys, logins.

Imported only for remote configs (paramiko costs ~50 ms to import).
"""
