"""Ansible Vault values (`!vault`): the password file, and decryption as Ansible's format 1.1
and 1.2 (AES256) define it, with the `cryptography` primitives.

The envelope is `$ANSIBLE_VAULT;1.1;AES256` (1.2 adds a vault id) then, hex-encoded, three
hex lines: a salt, an HMAC-SHA256 and the ciphertext. PBKDF2-HMAC-SHA256 (10,000 rounds) of
the password and salt gives 80 bytes: the AES key, the HMAC key and the CTR counter block;
the plaintext is PKCS#7-padded. The password file is read as Ansible reads it (its content,
white space stripped); an executable one is a script Ansible would run, and is refused:
nothing an inventory names runs on this machine.
"""

from __future__ import annotations

import binascii
import hmac
import os
import stat
from collections.abc import Mapping
from pathlib import Path

from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from anywhere.errors import InventoryError, Problem

PASSWORD_FILE_ENV = "ANSIBLE_VAULT_PASSWORD_FILE"  # noqa: S105 - a variable name
_IDENTITY_LIST_ENV = "ANSIBLE_VAULT_IDENTITY_LIST"
_HEADER = "$ANSIBLE_VAULT;"
_ROUNDS = 10_000
_MAX_PASSWORD_FILE = 64 * 1024


class VaultError(Exception):
    """The value cannot be decrypted (not an envelope, or the password does not open it)."""


def is_envelope(text: str) -> bool:
    return text.lstrip().startswith(_HEADER)


def decrypt(envelope: str, password: bytes) -> str:
    """The plaintext of `envelope`; VaultError when it is malformed or `password` is wrong."""
    header, _, body = envelope.strip().partition("\n")
    fields = header.strip().split(";")
    if len(fields) < 3 or fields[1] not in ("1.1", "1.2") or fields[2].strip() != "AES256":
        raise VaultError(f"unsupported vault format {header.strip()[:40]!r}")
    try:
        inner = binascii.unhexlify("".join(body.split()))
        salt, mac, data = (binascii.unhexlify(p) for p in inner.split(b"\n", 2))
    except (binascii.Error, ValueError):
        raise VaultError("malformed vault data") from None
    key = PBKDF2HMAC(hashes.SHA256(), 80, salt, _ROUNDS).derive(password)
    expected = hmac.new(key[32:64], data, "sha256").digest()
    if not hmac.compare_digest(expected, mac):
        raise VaultError("the vault password does not decrypt it")
    decryptor = Cipher(algorithms.AES(key[:32]), modes.CTR(key[64:80])).decryptor()
    padded = decryptor.update(data) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        plain = unpadder.update(padded) + unpadder.finalize()
        return plain.decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        raise VaultError("malformed vault data") from None


def password(env: Mapping[str, str], cwd: Path | None = None) -> bytes | None:
    """The vault password from the file ANSIBLE_VAULT_PASSWORD_FILE names (None when unset);
    InventoryError when it is a script, missing or empty."""
    if env.get(_IDENTITY_LIST_ENV):
        raise InventoryError(
            [
                Problem(
                    f"${_IDENTITY_LIST_ENV}",
                    None,
                    "vault ids are not supported: give one password file "
                    f"(--vault-password-file or ${PASSWORD_FILE_ENV})",
                )
            ]
        )
    name = env.get(PASSWORD_FILE_ENV, "")
    if not name:
        return None
    path = Path(os.path.expanduser(name))
    path = path if path.is_absolute() or cwd is None else cwd / path
    where = f"${PASSWORD_FILE_ENV}"

    def refuse(message: str) -> InventoryError:
        return InventoryError([Problem(where, None, f"{path}: {message}")])

    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise refuse(f"cannot read the vault password file: {exc.strerror}") from None
    if not stat.S_ISREG(mode):
        raise refuse("the vault password file is not a regular file")
    if mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH):
        raise refuse(
            "is executable: Ansible would run it as a vault password script, and anywhere "
            "runs nothing an inventory names; give a file holding the password (chmod a-x)"
        )
    data = path.read_bytes()[:_MAX_PASSWORD_FILE].strip()
    if not data:
        raise refuse("the vault password file is empty")
    return data
