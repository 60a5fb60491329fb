"""CURVE security for the engine's sockets: key pairs, the key table, the ZAP authenticator.

When the market config has a `[security]` section (engine.config.Security), every socket the
engine binds is a CURVE server (`secure_server`) and the context's ZAP handler
(engine.gateway.zap), a thread owning its own ZAP socket (`start_authenticator`), decides who
may connect. Invariants:
- fail closed: every server socket sets a ZAP domain and ZMQ_ZAP_ENFORCE_DOMAIN, so with no
  ZAP handler running (the thread not started, or dead) libzmq refuses every handshake instead
  of accepting any key (its behaviour without the option);
- a key is admitted only if the key table lists it for an identity its socket's domain
  admits (`DOMAINS`: orders take gateways, admin operators, market data all three); the
  connection's ZMQ User-Id is then that identity: "gateway:<id>", "operator:<name>" or
  "md:<name>", which the service checks again on every frame (a revoked key's connection
  stays open until the service ends it);
- each identity has one key; a key maps to one identity (a key listed twice is refused at
  load, so a User-Id never depends on which listing won);
- `Authenticator.reload` rereads the key files and swaps the table in one assignment (the
  ZAP handler's thread reads it per handshake): a key removed or replaced is refused for every
  new connection from then on; it returns the identities whose key was revoked so the service
  can end their open sessions. `refuse` refuses one identity on one domain's sockets until
  the next reload (market data's answer to a reader that makes up topics; an identity
  refused on the feed is refused on its snapshot service too, `REFUSED_WITH`). A socket whose
  frames the service does not check per peer (the market data feed and snapshot ROUTER, the
  trade stream, a relay's PUB) has its connections ended by `reconnect_all` after a
  revocation: every peer reconnects by itself and is admitted or refused under the new table;
- key files are written by `create_key_pair` (zmq.auth.create_certificates) with the secret
  file readable by its owner only (0600), never over an existing file.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.utils import z85

from engine.config import Security
from engine.gateway.zap import ZapHandler

IDENTITY_KINDS = {"gateways": "gateway", "operators": "operator", "market_data": "md"}
# the ZAP domain of each kind of server socket, and the kinds of identity it admits
DOMAINS = {
    "orders": ("gateway:",),
    "admin": ("operator:",),
    "market_data": ("md:", "operator:", "gateway:"),  # the feed
    "snapshots": ("md:", "operator:", "gateway:"),  # the feed's snapshot service
}
REFUSED_WITH = {"snapshots": "market_data"}  # an identity refused on the feed is on these too
Z85_KEY_LENGTH = 40  # a 32-byte CURVE key in Z85
KEY_FILE_SUFFIXES = (".key", ".key_secret")


class KeyFileError(ValueError):
    """A key that cannot be read: the message names the file or identity and what is wrong."""


@dataclass(frozen=True)
class KeyPair:
    public: bytes  # Z85
    secret: bytes | None  # Z85; None for a public key only


def create_key_pair(directory: Path, name: str) -> tuple[Path, Path]:
    """Write NAME.key (public) and NAME.key_secret (both keys, 0600) into `directory`;
    refuses to overwrite either. Returns (public file, secret file)."""
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"key name {name!r}: give a plain name such as 'mm' or 'engine'")
    directory = Path(directory)
    public, secret = directory / f"{name}.key", directory / f"{name}.key_secret"
    for path in (public, secret):
        if path.exists():
            raise ValueError(f"{path} exists: keys are never overwritten (remove it first)")
    directory.mkdir(parents=True, exist_ok=True)
    old_mask = os.umask(0o077)  # the secret file is never readable by others, even briefly
    try:
        zmq.auth.create_certificates(directory, name)
    finally:
        os.umask(old_mask)
    os.chmod(secret, 0o600)
    os.chmod(public, 0o644)
    return public, secret


def read_key(text: str, where: str) -> KeyPair:
    """A key as the config gives it: the path of a key file (ending in .key or .key_secret,
    as `cxe keys` writes them) or a 40-character Z85 public key; `where` names it in errors."""
    if not text.endswith(KEY_FILE_SUFFIXES):
        return KeyPair(_z85_key(text.encode("ascii", "replace"), where), None)
    path = Path(text)
    if not path.is_file():
        raise KeyFileError(f"{where}: no key file {path}: make one with `cxe keys NAME --dir DIR`")
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"{where}: {path} is not a ZeroMQ key file: {exc}") from None
    _z85_key(public, where)
    if secret is not None:
        _z85_key(secret, where)
    return KeyPair(public, secret)


def _z85_key(key: bytes | None, where: str) -> bytes:
    try:
        if key is None or len(z85.decode(key)) != 32:
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise KeyFileError(
            f"{where}: {key!r} is not a {Z85_KEY_LENGTH}-character Z85 key (nor a key file "
            "path ending in .key or .key_secret)"
        ) from None
    return key


def server_keys(security: Security) -> KeyPair:
    keys = read_key(security.server_key, "security.server_key")
    if keys.secret is None:
        raise KeyFileError(
            f"security.server_key: {security.server_key} holds no secret key: give the "
            "engine's NAME.key_secret file"
        )
    return keys


def key_table(security: Security) -> dict[bytes, str]:
    """Z85 public key -> User-Id ("gateway:mm", ...), read from the files now."""
    table: dict[bytes, str] = {}
    for field, kind in IDENTITY_KINDS.items():
        for name, text in getattr(security, field).items():
            identity = f"{kind}:{name}"
            public = read_key(text, f"security.{field}.{name}").public
            if public in table:
                raise KeyFileError(
                    f"security.{field}.{name}: the same key as {table[public]!r}: give each "
                    "identity its own key pair"
                )
            table[public] = identity
    return table


def check(security: Security) -> None:
    """Validate at load: every file exists and holds a key, no key is shared."""
    server_keys(security)
    key_table(security)


class Authenticator:
    """The context's ZAP handler (engine.gateway.zap) asking the key table: the User-Id of an
    admitted connection is its identity."""

    def __init__(
        self, context: zmq.Context, security: Security, log: Callable[[str], None] | None = None
    ) -> None:
        self.security = security
        self.table = key_table(security)
        self.refused: frozenset[tuple[str, str]] = frozenset()  # (domain, identity)
        self.zap = ZapHandler(context, self.identify, log)

    def identify(self, domain: str, key: bytes) -> str | None:
        """ZAP's question for a CURVE handshake (the handler's thread): the identity of this
        Z85 key, if the table lists it for an identity `domain` admits and it is not refused
        there; else None."""
        identity = self.table.get(key, "")
        admitted = identity.startswith(DOMAINS.get(domain, ()))
        if not admitted or (REFUSED_WITH.get(domain, domain), identity) in self.refused:
            return None
        return identity

    def refuse(self, domain: str, identity: str) -> None:
        """Refuse `identity` on `domain`'s sockets (market data's: the snapshots' too) from the
        next handshake on, until the next reload (its open connections are the caller's to
        end)."""
        self.refused = self.refused | {(domain, identity)}  # one assignment: the thread reads it

    def reload(self, security: Security | None = None) -> set[str]:
        """Reread the key files (of `security`, a fresh config's, or the one in force); the
        identities whose key was removed or replaced. A key that cannot be read leaves
        everything as it was (the error says why)."""
        security = security or self.security
        table = key_table(security)
        now = {identity: key for key, identity in table.items()}
        revoked = {identity for key, identity in self.table.items() if now.get(identity) != key}
        self.security, self.table, self.refused = security, table, frozenset()
        return revoked

    def stop(self) -> None:
        self.zap.stop()


def start_authenticator(
    context: zmq.Context, security: Security, log: Callable[[str], None] | None = None
) -> Authenticator:
    """Start the ZAP handler for `context` (before any secured socket binds)."""
    return Authenticator(context, security, log)


def secure_server(socket: zmq.Socket, keys: KeyPair, domain: str) -> None:
    """Make `socket` a CURVE server in ZAP `domain`, failing closed; call before bind."""
    socket.curve_server = True
    socket.curve_publickey = keys.public
    socket.curve_secretkey = keys.secret
    ask_zap(socket, domain)


def ask_zap(socket: zmq.Socket, domain: str) -> None:
    """Have the context's ZAP handler (engine.gateway.zap) decide each handshake of `socket`,
    in `domain`, failing closed: with no handler bound, no handshake completes (libzmq's
    default without ZMQ_ZAP_ENFORCE_DOMAIN would admit every peer); call before bind."""
    socket.zap_domain = domain.encode()
    socket.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)


_monitors = itertools.count()
REBIND_TIMEOUT_S = 5.0  # how long `reconnect_all` waits for the old listener to close


def next_monitor_address() -> str:
    """An inproc address for a socket monitor that no other monitor of this process has used
    (pyzmq's default, one per socket, may still be held by a monitor just closed)."""
    return f"inproc://monitor-{os.getpid()}-{next(_monitors)}"


def reconnect_all(
    socket: zmq.Socket,
    endpoint: str,
    timeout: float = REBIND_TIMEOUT_S,
    listener_closed: threading.Event | None = None,
) -> None:
    """End every connection `socket` accepted on `endpoint` (its LAST_ENDPOINT) and bind it
    there again: each peer reconnects by itself (ZeroMQ does) and goes through the ZAP
    handler again. Messages sent meanwhile are lost to every peer (a subscriber sees a gap and
    resyncs). libzmq ends the connections as the socket is next used (a send, receive or
    poll processes its commands), which its owner does every turn. The old listener closes in
    libzmq's I/O thread (and takes an `ipc://*` endpoint's directory with it): the new bind
    waits for its EVENT_CLOSED, and makes such a directory again only if it is gone (one found
    in its place is refused: another local user's). zmq.ZMQError if the close does not come
    within `timeout` s or the bind fails (the socket is then unbound: the caller says so).
    A socket has one monitor: one that has a monitor already (a ReaderByteLimit's,
    engine.gateway.readerlimit) gives the event that monitor sets, `listener_closed`."""
    directory = Path(endpoint[len("ipc://") :]).parent if endpoint.startswith("ipc://") else None
    before = os.stat(directory) if directory is not None else None
    monitor = None
    if listener_closed is None:
        # an address of its own: the last call's inproc endpoint may not be released yet
        monitor = socket.get_monitor_socket(zmq.EVENT_CLOSED, next_monitor_address())
    else:
        listener_closed.clear()
    try:
        socket.unbind(endpoint)
        if monitor is None:
            closed = listener_closed.wait(timeout)
        else:
            closed = bool(monitor.poll(int(timeout * 1000)))
        if not closed:
            raise zmq.ZMQError(zmq.EAGAIN, f"{endpoint}: the old listener did not close")
    finally:
        if monitor is not None:
            socket.disable_monitor()
            monitor.close(0)
    if directory is not None and _replaced(directory, before):
        raise zmq.ZMQError(zmq.EADDRINUSE, f"{directory} was replaced: not bound there again")
    socket.bind(endpoint)


def not_served(name: str, exc: zmq.ZMQError) -> str:
    """The log line for a socket `reconnect_all` could not bind again."""
    return f"{name}: NOT SERVED after ending its connections ({exc}): restart the engine"


def _replaced(directory: Path, before: os.stat_result) -> bool:
    """Whether an ipc endpoint's directory is another than it was; one that has gone (an
    `ipc://*` endpoint's, with its listener) is made again, owner-only."""
    try:
        now = os.stat(directory)
    except FileNotFoundError:
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:  # someone made it meanwhile
            return True
        return False
    return (now.st_dev, now.st_ino) != (before.st_dev, before.st_ino)


def secure_client(socket: zmq.Socket, client: KeyPair, server_public: bytes) -> None:
    """Make `socket` a CURVE client with its key pair, trusting `server_public`; call before
    connect."""
    if client.secret is None:
        raise KeyFileError("a client needs its secret key file (NAME.key_secret)")
    socket.curve_serverkey = server_public
    socket.curve_publickey = client.public
    socket.curve_secretkey = client.secret


def client_keys(key_file: str | None, server_key: str | None) -> tuple[KeyPair, bytes] | None:
    """The CLI's and clients' --key/--server-key options: None for a plain connection."""
    if key_file is None and server_key is None:
        return None
    if key_file is None or server_key is None:
        raise ValueError("give both --key (your NAME.key_secret) and --server-key (engine.key)")
    return read_key(key_file, "--key"), server_public_key(server_key, "--server-key")


def server_public_key(text: str, option: str) -> bytes:
    """A server's public key for a client: a Z85 key or a NAME.key file, never a secret."""
    keys = read_key(text, option)
    if keys.secret is not None:
        raise KeyFileError(
            f"{option} {text} holds a secret key: give the public key file (NAME.key); a "
            "client never needs the server's secret, and should not hold it"
        )
    return keys.public


def user_id(frame: zmq.Frame) -> str:
    """The identity of the connection a received frame came over ("" on a plain socket,
    which has no User-Id: libzmq answers EINVAL)."""
    try:
        return frame.get("User-Id") or ""
    except zmq.ZMQError:
        return ""


PLAIN_WARNING = (
    "PLAIN LOOPBACK MODE: no authentication, no encryption: any local process may connect "
    "as any gateway or operator (give the config a [security] section for CURVE)"
)
LOCAL_HOSTS = ("127.", "localhost", "[::1]")


def allow_ipv6(socket: zmq.Socket, endpoint: str) -> None:
    """Let `socket` bind or connect to `endpoint` if it names an IPv6 address, such as
    tcp://[::1]:5555: libzmq's sockets are IPv4 only unless told (binding it answered "No
    such device"). Only then: a socket told would also resolve a host name to its IPv6
    address first, which a server bound on IPv4 only does not answer."""
    if "://[" in endpoint:
        socket.setsockopt(zmq.IPV6, 1)


def off_loopback(endpoints: list[str]) -> list[str]:
    """The endpoints another machine could reach (tcp not on a loopback address); ipc and
    inproc are local."""
    return [
        endpoint
        for endpoint in endpoints
        if endpoint.startswith("tcp://") and not endpoint[6:].startswith(LOCAL_HOSTS)
    ]
