"""Encryption of stored secrets: AES-256-GCM under keys derived from the server secret.

Each server secret (`FERRY_SECRET_KEY`, then every `FERRY_SECRET_KEY_PREVIOUS`) gives one
256-bit key through HKDF-SHA256 with a purpose of its own, so the key that encrypts
secrets is never the one that signs anything else. A sealed value is the text
`v1:<key id>:<base64url(nonce + ciphertext + tag)>`; the key id (a hash of the derived
key, not the key) says which key opens it, so a value sealed under a previous key is
still read while the keys are rotated, and `ferry secrets rotate` knows what to
re-encrypt. The associated data binds each value to its tenant, kind and name: a sealed
value copied into another tenant's row (or under another name) does not open.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from runtime.errors import SecretUndecryptable
from runtime.settings import Settings

VERSION = "v1"
#: HKDF's `info`: the purpose the derived key serves, and nothing else.
PURPOSE = b"ferry/secrets-at-rest/v1"
NONCE_BYTES = 12


def derive_key(server_secret: str) -> bytes:
    """The 256-bit encryption key of one server secret."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=PURPOSE)
    return hkdf.derive(server_secret.encode())


def key_id(key: bytes) -> str:
    """A short public name of a derived key (a hash of it: it reveals nothing of the key)."""
    return hashlib.sha256(b"ferry/key-id/" + key).hexdigest()[:16]


class SecretBox:
    """Seal values under the current key; open values sealed under any known key."""

    def __init__(self, current: str, previous: Sequence[str] = ()) -> None:
        keys = [derive_key(secret) for secret in (current, *previous)]
        self._current_id = key_id(keys[0])
        self._keys = {key_id(key): AESGCM(key) for key in reversed(keys)}

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretBox:
        return cls(settings.secret_key, settings.secret_key_previous)

    @property
    def current_key_id(self) -> str:
        return self._current_id

    def seal(self, plaintext: bytes, context: bytes) -> str:
        """Encrypt `plaintext` under the current key, bound to `context`."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._keys[self._current_id].encrypt(nonce, plaintext, context)
        body = base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")
        return f"{VERSION}:{self._current_id}:{body}"

    def open(self, token: str, context: bytes) -> bytes:
        """Decrypt a sealed value; `SecretUndecryptable` if no known key opens it."""
        version, _, rest = token.partition(":")
        kid, _, body = rest.partition(":")
        aead = self._keys.get(kid)
        if version != VERSION or aead is None:
            raise SecretUndecryptable(
                "a stored secret was encrypted under a key that is neither FERRY_SECRET_KEY "
                "nor in FERRY_SECRET_KEY_PREVIOUS; set the key it was made with as a previous key"
            )
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            return aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], context)
        except (InvalidTag, ValueError) as ex:
            raise SecretUndecryptable(
                "a stored secret does not decrypt: it was altered, or belongs to another row"
            ) from ex

    def is_current(self, token: str) -> bool:
        """Whether `token` is sealed under the current key (rotation leaves it alone)."""
        return token.startswith(f"{VERSION}:{self._current_id}:")
