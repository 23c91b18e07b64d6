"""Encryption at rest: AES-256-GCM with a data key per user, wrapped by a master key.

::

    from memlane import Memory
    from memlane.ciphers import AesGcmCipher, Keyring, LocalMasterKey

    keyring = Keyring("memlane.keys", LocalMasterKey.parse(master_key_text))
    memory = Memory("memlane.db", cipher=AesGcmCipher(keyring))

The command line and the server read ``MEMLANE_MASTER_KEY`` (or ``MEMLANE_MASTER_KEY_FILE``)
and ``MEMLANE_KEYRING`` (see :mod:`memlane.settings`). What is sealed and what is not:
:mod:`memlane.stores.sealed`.
"""

from memlane.ciphers.aesgcm import AesGcmCipher, AesGcmUserKey
from memlane.ciphers.keyring import Keyring
from memlane.ciphers.keys import KmsMasterKey, LocalMasterKey, MasterKey, generate_key

__all__ = [
    "AesGcmCipher",
    "AesGcmUserKey",
    "Keyring",
    "KmsMasterKey",
    "LocalMasterKey",
    "MasterKey",
    "generate_key",
]
