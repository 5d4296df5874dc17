"""What every key the key seam hands out refuses: export, pickling and copies that could leak.

Both stores' key classes (``hsm.keys`` for PKCS#11, ``hsm.softkeys`` for software) list this
mixin before cryptography's abstract key class, so it satisfies ``private_bytes`` for all
three key types.
"""

from __future__ import annotations

from typing import Any, NoReturn, Self

from hsm.errors import KeyNotExtractable
from hsm.keytypes import KeyType


class SealedKey:
    """A labelled private key that cannot leave its store."""

    label: str
    key_type: KeyType
    _held_where = "is held by its key store"

    def _refuse_export(self) -> NoReturn:
        raise KeyNotExtractable(
            f"the private key {self.label!r} {self._held_where} and cannot be exported"
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} label={self.label!r} key_type={self.key_type.value}>"

    def private_bytes(self, encoding: Any, format: Any, encryption_algorithm: Any) -> bytes:
        self._refuse_export()

    def __reduce__(self) -> NoReturn:
        """Pickling is exporting: refused on purpose, not by accident of a member's type."""
        self._refuse_export()

    def __copy__(self) -> Self:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> Self:
        return self
