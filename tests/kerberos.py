"""A real MIT Kerberos realm for the test suite, as a pytest plugin module, and a GSSAPI-only sshd.

* ``kdc`` (session) -- a realm of its own (random name) served by MIT's
  krb5kdc on a free 127.0.0.1 port, from files in a temp directory: the
  machine's /etc/krb5.conf is never read or written (`KRB5_CONFIG`,
  `KRB5_KDC_PROFILE`). It holds a user principal for the test user, with a
  password, and `kinit(ccache)` gets a ticket for it as a person would.
* ``sshd_gssapi`` (session) -- an sshd (tests/sshd.py, own network namespace)
  accepting only gssapi-with-mic: its host principal `host/ADDRESS` in a
  keytab of its own (`KRB5_KTNAME` in sshd's environment).
* ``sshd_gssapi_localhost`` (session) -- the same on 127.0.0.1 in the host
  namespace, whose keytab holds only `host/localhost`: the name a reverse
  lookup of 127.0.0.1 gives (/etc/hosts), not the address a config names.

Debian's krb5-kdc, krb5-admin-server and krb5-user provide the programs
(.ci/run installs them); without them the fixtures skip, or fail in CI.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.sshd import (
    NetNamespace,
    SSHAccount,
    SSHServer,
    _free_loopback_port,
    _in_namespace,
    _unavailable,
    launch_sshd,
)

KRB5_PROGRAMS = ("/usr/sbin/krb5kdc", "/usr/sbin/kdb5_util", "/usr/sbin/kadmin.local", "/usr/bin/kinit")
KDC_START_TIMEOUT = 15.0


@dataclass
class KDC:
    """A running realm: its config (for KRB5_CONFIG), the user principal and password."""

    realm: str
    directory: Path
    config: Path
    principal: str
    password: str
    process: subprocess.Popen[bytes]

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "KRB5_CONFIG": str(self.config), "KRB5_KDC_PROFILE": str(self.directory / "kdc.conf")}

    def admin(self, query: str) -> None:
        subprocess.run(["kadmin.local", "-r", self.realm, "-q", query], env=self.env, check=True,
                       capture_output=True)

    def keytab(self, principal: str, path: Path) -> Path:
        """A new principal with a random key, written to the keytab at `path`."""
        self.admin(f"addprinc -randkey {principal}")
        self.admin(f"ktadd -k {path} {principal}")
        return path

    def kinit(self, ccache: Path, lifetime: str = "1h", forwardable: bool = False) -> None:
        """A ticket for the user principal in `ccache`, the password typed on stdin as a person would."""
        options = ["-f"] if forwardable else ["-F"]
        subprocess.run(["kinit", "-l", lifetime, *options, self.principal], input=f"{self.password}\n".encode(),
                       env={**self.env, "KRB5CCNAME": f"FILE:{ccache}"}, check=True, capture_output=True)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        shutil.rmtree(self.directory, ignore_errors=True)


def start_kdc(user: str) -> KDC:
    missing = [program for program in KRB5_PROGRAMS if not os.path.exists(program)]
    if missing:
        _unavailable(f"MIT Kerberos is missing ({', '.join(missing)}): .ci/run installs krb5-kdc, "
                     "krb5-admin-server and krb5-user")
    realm = f"RHL{secrets.token_hex(3).upper()}.TEST"
    directory = Path(tempfile.mkdtemp(prefix="rhl-kdc-"))
    directory.chmod(0o755)  # sshd, as the test user, reads krb5.conf from here
    port = _free_loopback_port()
    config = directory / "krb5.conf"
    config.write_text(f"""[libdefaults]
    default_realm = {realm}
    dns_lookup_kdc = false
    dns_lookup_realm = false
    dns_canonicalize_hostname = false
    rdns = false
[realms]
    {realm} = {{
        kdc = 127.0.0.1:{port}
    }}
""")
    config.chmod(0o644)
    (directory / "kdc.conf").write_text(f"""[kdcdefaults]
    kdc_ports = {port}
    kdc_tcp_ports = {port}
[realms]
    {realm} = {{
        database_name = {directory}/principal
        key_stash_file = {directory}/stash
        acl_file = {directory}/kadm5.acl
    }}
[logging]
    kdc = FILE:{directory}/kdc.log
""")
    env = {**os.environ, "KRB5_CONFIG": str(config), "KRB5_KDC_PROFILE": str(directory / "kdc.conf")}
    subprocess.run(["kdb5_util", "create", "-s", "-r", realm, "-P", secrets.token_urlsafe(16)], env=env,
                   check=True, capture_output=True)
    process = subprocess.Popen(["krb5kdc", "-n", "-r", realm], env=env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kdc = KDC(realm, directory, config, f"{user}@{realm}", secrets.token_urlsafe(12), process)
    kdc.admin(f"addprinc -pw {kdc.password} {kdc.principal}")
    deadline = time.monotonic() + KDC_START_TIMEOUT
    while True:  # the KDC answers once kinit works
        try:
            kdc.kinit(directory / "probe.ccache")
            break
        except subprocess.CalledProcessError:
            if process.poll() is not None or time.monotonic() > deadline:
                kdc.close()
                raise
            time.sleep(0.1)
    return kdc


def launch_gssapi_sshd(account: SSHAccount, kdc: KDC, ns: NetNamespace | None = None,
                       principal_host: str = "") -> SSHServer:
    """An sshd accepting only gssapi-with-mic, its host principal's key in a keytab of its own: `host/NAME`
    for `principal_host`, else for the address it listens on."""
    keytab = kdc.directory / f"sshd-{secrets.token_hex(3)}.keytab"
    overrides = {"GSSAPIAuthentication": "yes", "GSSAPIStrictAcceptorCheck": "no", "PubkeyAuthentication": "no",
                 "PasswordAuthentication": "no", "KbdInteractiveAuthentication": "no",
                 "AuthenticationMethods": "gssapi-with-mic"}
    env = {"KRB5_CONFIG": str(kdc.config), "KRB5_KTNAME": f"FILE:{keytab}"}
    server = launch_sshd(account, keytab.stem, ns, config_overrides=overrides, env=env)
    # the address is known only now; sshd reads the keytab per login
    kdc.keytab(f"host/{principal_host or server.host}@{kdc.realm}", keytab)
    return server


@pytest.fixture(scope="session")
def kdc(sshd_account: SSHAccount) -> Iterator[KDC]:
    """A Kerberos realm whose user principal is the test user."""
    realm = start_kdc(sshd_account.name)
    try:
        yield realm
    finally:
        realm.close()


@pytest.fixture(scope="session")
def sshd_gssapi(sshd_account: SSHAccount, kdc: KDC) -> Iterator[SSHServer]:
    """sshd accepting only Kerberos (gssapi-with-mic) logins from the `kdc` realm."""
    yield from _in_namespace(sshd_account, lambda ns: launch_gssapi_sshd(sshd_account, kdc, ns))


@pytest.fixture(scope="session")
def sshd_gssapi_localhost(sshd_account: SSHAccount, kdc: KDC) -> Iterator[SSHServer]:
    """A Kerberos-only sshd on 127.0.0.1 whose principal is host/localhost (127.0.0.1's reverse name)."""
    server = launch_gssapi_sshd(sshd_account, kdc, principal_host="localhost")
    try:
        yield server
    finally:
        server.close()
