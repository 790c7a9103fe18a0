"""Encryption at rest: message content, summaries and usage details, never in plaintext.

``Encryption(keys)`` encrypts with the first key (Fernet: AES-128-CBC with HMAC-SHA256) and
decrypts with any of them, so a key is rotated by putting the new key first and calling
``ledger.rotate_encryption()``. Token counts, seqs and roles stay in the clear: that is what
lets a window be planned without decrypting the history, and they reveal no content.
Encrypted values carry the prefix ``enc1:``; a value without it is plaintext written before
encryption was enabled, still readable, and encrypted by the next rotation.
"""

from __future__ import annotations

from collections.abc import Sequence

from chatledger.errors import ChatLedgerError, InvalidArgumentError

__all__ = ["PLAIN", "Codec", "DecryptionError", "Encryption"]

PREFIX = "enc1:"


class DecryptionError(ChatLedgerError):
    """Stored data cannot be decrypted: a wrong or missing key, or a damaged value."""


class Codec:
    """No encryption: values are stored as they are (the default)."""

    encrypted = False

    def encode(self, text: str) -> str:
        return text

    def encode_opt(self, text: str | None) -> str | None:
        return None if text is None else self.encode(text)

    def decode(self, text: str) -> str:
        if text.startswith(PREFIX):
            raise DecryptionError(
                "the database holds encrypted data: open the ledger with encryption=Encryption(...)"
            )
        return text

    def decode_opt(self, text: str | None) -> str | None:
        return None if text is None else self.decode(text)

    def rotate(self, text: str) -> str:
        return text


PLAIN = Codec()


class Encryption(Codec):
    """Fernet encryption with rotation: ``Encryption(["new-key", "old-key"])``.

    Keys are 32-byte url-safe base64 strings, as ``Encryption.generate_key()`` makes them.
    Needs the ``cryptography`` package (``pip install chatledger[encryption]``).
    """

    encrypted = True

    def __init__(self, keys: Sequence[str | bytes]) -> None:
        try:
            from cryptography.fernet import Fernet, MultiFernet
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise InvalidArgumentError(
                "encryption", "needs the cryptography package: pip install chatledger[encryption]"
            ) from exc
        if isinstance(keys, (str, bytes)) or not keys:
            raise InvalidArgumentError("keys", "must be a non-empty list of keys, newest first")
        fernets = []
        for i, key in enumerate(keys):
            try:
                fernets.append(Fernet(key))
            except (ValueError, TypeError):
                raise InvalidArgumentError(
                    f"keys[{i}]", "must be a 32-byte url-safe base64 Fernet key"
                ) from None
        self._fernet = MultiFernet(fernets)

    @staticmethod
    def generate_key() -> str:
        from cryptography.fernet import Fernet

        return Fernet.generate_key().decode("ascii")

    def encode(self, text: str) -> str:
        return PREFIX + self._fernet.encrypt(text.encode("utf-8")).decode("ascii")

    def decode(self, text: str) -> str:
        if not text.startswith(PREFIX):
            return text  # written before encryption was turned on
        from cryptography.fernet import InvalidToken

        try:
            return self._fernet.decrypt(text[len(PREFIX) :].encode("ascii")).decode("utf-8")
        except InvalidToken:
            raise DecryptionError(
                "stored data does not decrypt with any configured key (wrong key, or a damaged "
                "value)"
            ) from None

    def rotate(self, text: str) -> str:
        """The value encrypted with the newest key (plaintext values are encrypted)."""
        if not text.startswith(PREFIX):
            return self.encode(text)
        from cryptography.fernet import InvalidToken

        try:
            token = self._fernet.rotate(text[len(PREFIX) :].encode("ascii"))
        except InvalidToken:
            raise DecryptionError(
                "a stored value does not decrypt with any configured key"
            ) from None
        return PREFIX + token.decode("ascii")
