"""A `!vault` variable → its value, or why it cannot be used.

Decrypted values are `Vaulted` secrets: masked wherever they are shown, written back
encrypted. A variable anywhere interprets takes a vaulted value only when it is a secret
(`ansible_become_password`): the others (addresses, users, regions, …) are shown in reports,
commands and host records, which would unmask them, so they are refused.
"""

from __future__ import annotations

from anywhere.inventory._base import Invalid, PathBase
from anywhere.inventory._connection_values import ANSIBLE, is_secret
from anywhere.inventory._values import ANYWHERE, convert
from anywhere.inventory._vault import PASSWORD_FILE_ENV, VaultError, decrypt
from anywhere.models import Vaulted

VAULT_KEY = "__ansible_vault"  # how ansible-inventory --list prints a vaulted value


def unvault(name: str, envelope: str, ctx: PathBase) -> tuple[Vaulted, object] | str:
    """(the raw value, the converted value), or a problem's message."""
    if ctx.vault_password is None:
        return (
            f"{name} is vault-encrypted and no vault password is given "
            f"(--vault-password-file or ${PASSWORD_FILE_ENV})"
        )
    try:
        secret = Vaulted(decrypt(envelope, ctx.vault_password), envelope)
    except VaultError as exc:
        return f"{name}: {exc}"
    if name not in ANYWHERE and name not in ANSIBLE:
        return secret, secret
    if not is_secret(name):
        return (
            f"{name}: a vault-encrypted value is not supported here: anywhere shows this "
            "value in reports and commands; write it in clear"
        )
    try:
        return secret, convert(name, secret.reveal(), ctx)
    except Invalid as exc:
        return exc.message
