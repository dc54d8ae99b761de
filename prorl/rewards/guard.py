"""What the reward service refuses: requests without the shared token, an unprotected public
address, and requests over the per-request limits.

The token is read from a file (``--token-file PATH`` / ``reward.server_token_file``, or the file
named by the ``PRORL_REWARD_TOKEN_FILE`` environment variable) so that it never appears on a
command line (``ps``) or in a config saved with the run. It is compared in constant time and
never written to a log or an error message.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path

TOKEN_FILE_ENV = "PRORL_REWARD_TOKEN_FILE"


@dataclass(frozen=True)
class ServerLimits:
    """Per-request limits; small defaults suit a service shared by several trainers."""

    max_body_mb: float = 32.0  # 256 items of 8k-token responses are ~8 MB
    max_items: int = 1024  # items per request
    request_timeout_s: float = 30.0  # a request head, and then its body, must arrive within this

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)


class TokenError(ValueError):
    """The token file is missing, unreadable or empty (the message names the file, never its content)."""


def load_token(path: str | os.PathLike | None = None) -> str | None:
    """The token in ``path`` (or in the file named by ``$PRORL_REWARD_TOKEN_FILE``); None when neither is given."""
    path = path or os.environ.get(TOKEN_FILE_ENV) or None
    if path is None:
        return None
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise TokenError(f"cannot read the reward-service token file {str(path)!r}: {type(e).__name__}") from None
    if not token:
        raise TokenError(f"the reward-service token file {str(path)!r} is empty")
    if any(c.isspace() for c in token):
        raise TokenError(f"the reward-service token in {str(path)!r} contains whitespace")
    return token


def bearer_ok(header: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header carries ``Bearer <token>`` (constant-time comparison)."""
    if not header or not header.startswith("Bearer "):
        hmac.compare_digest(b"x" * len(token), token.encode())  # same work either way
        return False
    return hmac.compare_digest(header[len("Bearer "):].strip().encode(), token.encode())


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) resolves only to loopback addresses."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0].split("%")[0]).is_loopback for i in infos)


def refuse_insecure_bind(host: str, token: str | None, insecure: bool) -> str | None:
    """The one-line refusal when ``host`` is reachable from other machines and no token protects it."""
    if token is not None or insecure or is_loopback(host):
        return None
    return (f"refusing to listen on {host} without a token: anyone who can reach it could run code in its "
            f"sandbox and use its CPUs; give --token-file PATH (or set {TOKEN_FILE_ENV}), bind to 127.0.0.1, "
            f"or pass --insecure to accept the risk")
