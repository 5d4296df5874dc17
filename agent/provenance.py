"""The agent's provenance: its DER form (``AgentProvenance``) and the running digests.

``RuntimeProvenance`` computes the digests of the model, system prompt and configuration the
agent is running with, and recomputes them when the files change (a cheap ``stat`` check at
most every ``recheck_seconds``), so a drifted prompt is noticed before the next signature.
The model digest is agentca's manifest digest or, with ``model_scheme="oms-v1"``, the
OpenSSF Model Signing root digest (decision 0049), which the CSR then claims as such.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from cryptography import x509

from agent.digests import (
    StrPath,
    config_digest,
    model_digest,
    oms_model_digest,
    prompt_digest,
)
from agent.errors import AgentError, DigestError
from wire import digests as wire_digests
from wire import extensions as wire_extensions
from wire import oids, oms
from wire.extensions import ModelDigestScheme

#: The dotted OID of the provenance extension under the default arc (kept importable; the
#: arc is the CA's: :class:`wire.oids.OidArc`).
PROVENANCE_OID = oids.DEFAULT_ARC.provenance.dotted_string


@dataclass(frozen=True)
class Provenance:
    """Model type and digests of model, system prompt and (optional) config.

    ``model_digest_scheme`` says what the model digest is of (agentca's manifest, or the OMS
    root digest); it is part of the claim and of what drift is checked against.
    """

    model_type: str
    model_digest: bytes
    prompt_digest: bytes
    config_digest: bytes | None = None
    algorithm: str = "sha256"
    model_digest_scheme: ModelDigestScheme = ModelDigestScheme.AGENTCA_MANIFEST

    def __post_init__(self) -> None:
        try:
            scheme = ModelDigestScheme.parse(self.model_digest_scheme)
        except wire_extensions.ExtensionError as exc:
            raise DigestError(str(exc)) from None
        object.__setattr__(self, "model_digest_scheme", scheme)
        if scheme is ModelDigestScheme.OMS and self.algorithm != "sha256":
            raise DigestError("an OMS model digest is a sha256 digest")
        if not 1 <= len(self.model_type) <= 128 or not self.model_type.isprintable():
            raise DigestError("model type must be 1..128 printable characters")
        if self.model_type != self.model_type.strip():
            raise DigestError("model type has leading or trailing whitespace")
        if self.algorithm not in oids.DIGEST_ALGORITHMS:
            raise DigestError(f"unsupported digest algorithm {self.algorithm!r}")
        size = oids.DIGEST_ALGORITHMS[self.algorithm][1]
        for name in ("model_digest", "prompt_digest", "config_digest"):
            value = getattr(self, name)
            if value is not None and len(value) != size:
                raise DigestError(f"{name} must be {size} bytes")

    def to_wire(self) -> wire_extensions.Provenance:
        """The shared wire value (:class:`wire.extensions.Provenance`)."""
        config = self.config_digest
        return wire_extensions.Provenance(
            self.model_type,
            wire_extensions.Digest(self.model_digest, self.algorithm),
            wire_extensions.Digest(self.prompt_digest, self.algorithm),
            None if config is None else wire_extensions.Digest(config, self.algorithm),
            self.model_digest_scheme,
        )

    def to_der(self) -> bytes:
        """DER of ``AgentProvenance`` (the CSR attribute value and the certificate extension)."""
        return self.to_wire().to_der()

    @classmethod
    def from_wire(cls, value: wire_extensions.Provenance) -> Provenance:
        """The SDK form of a decoded wire value (all digests of one algorithm)."""
        digests = [value.model_digest, value.prompt_digest]
        if value.config_digest is not None:
            digests.append(value.config_digest)
        if len({d.algorithm for d in digests}) != 1:
            raise AgentError("AgentProvenance is malformed: mixed digest algorithms")
        return cls(
            value.model_type,
            value.model_digest.value,
            value.prompt_digest.value,
            None if value.config_digest is None else value.config_digest.value,
            value.model_digest.algorithm,
            value.model_digest_scheme,
        )

    @classmethod
    def from_der(cls, data: bytes) -> Provenance:
        """Decode an ``AgentProvenance`` (only canonical DER is accepted)."""
        try:
            return cls.from_wire(wire_extensions.decode_provenance(data))
        except wire_extensions.ExtensionError as exc:
            raise AgentError(f"AgentProvenance is malformed: {exc}") from None

    @classmethod
    def of_certificate(
        cls, cert: x509.Certificate, arcs: Iterable[oids.OidArc] = oids.DEFAULT_ACCEPTED_ARCS
    ) -> Provenance:
        """The provenance extension of ``cert``, under one of ``arcs`` (the CA's accepted
        arcs)."""
        try:
            arc = wire_extensions.agent_arc(cert, arcs)
            raw = wire_extensions.extension_value(
                cert, arc.provenance, wire_extensions.PROVENANCE_NAME
            )
        except wire_extensions.ExtensionError as exc:
            raise AgentError(str(exc)) from None
        return cls.from_der(raw)

    def differences(self, other: Provenance) -> list[str]:
        """Names of the digests that differ from ``other`` (model, prompt, config); a model
        digest under another scheme differs even if the bytes were equal."""
        out = []
        if (self.model_digest, self.model_digest_scheme) != (
            other.model_digest,
            other.model_digest_scheme,
        ):
            out.append("model")
        if self.prompt_digest != other.prompt_digest:
            out.append("prompt")
        if self.config_digest != other.config_digest:
            out.append("config")
        return out


def _prompt_file_digest(path: StrPath) -> bytes:
    """SHA-256 of a prompt file, streamed; a FIFO, device or directory is refused, not read
    (opened non-blocking: a FIFO with no writer must not hang the agent)."""
    flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise DigestError(f"cannot read prompt file: {exc.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise DigestError("the prompt file is not a regular file")
    with os.fdopen(fd, "rb", buffering=0) as f:
        try:
            return wire_digests.sha256_stream(f)[0]
        except OSError as exc:
            raise DigestError(f"cannot read prompt file: {exc.strerror}") from None


@dataclass
class RuntimeProvenance:
    """The digests the agent is running with, recomputed when its files change.

    ``prompt`` and ``model`` are paths (or ``prompt_bytes`` gives the prompt in memory);
    ``config`` is the runtime configuration mapping (hashed as canonical JSON).
    ``model_scheme``: ``"agentca-manifest-v1"`` (default, certificates every gateway reads) or
    ``"oms-v1"`` (the OpenSSF Model Signing root digest: the model's inventory entry must be
    registered under it, and gateways must read ``AgentProvenance`` v2); ``model_ignore`` and
    ``model_allow_symlinks`` are OMS's ignored paths (e.g. ``model.sig``) and symlink flag.
    """

    model_type: str
    model_path: StrPath
    prompt_path: StrPath | None = None
    prompt_bytes: bytes | None = None
    config: Mapping[str, object] | None = None
    recheck_seconds: float = 1.0
    clock: Callable[[], float] = time.monotonic
    model_scheme: ModelDigestScheme | str = ModelDigestScheme.AGENTCA_MANIFEST
    model_ignore: tuple[str, ...] = ()
    model_allow_symlinks: bool = False
    _value: Provenance | None = field(default=None, init=False, repr=False)
    _stamp: tuple[object, object] | None = field(default=None, init=False, repr=False)
    _checked: float = field(default=-1e18, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _names: dict[bytes, tuple[str, ...]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if (self.prompt_path is None) == (self.prompt_bytes is None):
            raise DigestError("give exactly one of prompt_path and prompt_bytes")
        try:
            self.model_scheme = ModelDigestScheme.parse(self.model_scheme)
        except wire_extensions.ExtensionError as exc:
            raise DigestError(str(exc)) from None
        self.model_ignore = tuple(self.model_ignore)
        if self.model_scheme is ModelDigestScheme.AGENTCA_MANIFEST and (
            self.model_ignore or self.model_allow_symlinks
        ):
            raise DigestError("model_ignore and model_allow_symlinks need model_scheme='oms-v1'")

    def _model_stamp(self) -> object:
        try:
            if self.model_scheme is ModelDigestScheme.OMS:
                return oms.model_fingerprint(
                    self.model_path,
                    ignore=self.model_ignore,
                    allow_symlinks=self.model_allow_symlinks,
                )
            return wire_digests.model_stamps(self.model_path)
        except wire_digests.DigestError as exc:
            raise DigestError(str(exc)) from None

    def _model_digest(self) -> tuple[bytes, object | None]:
        """The model digest and, for OMS, the stamps of exactly the files hashed."""
        if self.model_scheme is ModelDigestScheme.OMS:
            result = oms_model_digest(
                self.model_path,
                ignore=self.model_ignore,
                allow_symlinks=self.model_allow_symlinks,
            )
            # The OMS root binds contents and order, not names: a rename that keeps the
            # order (config.json -> config.json.off) keeps the digest but changes what a
            # loader reads. Within one process, the names seen first for a root are kept.
            names = tuple(r.name for r in result.resources)
            if self._names.setdefault(result.root, names) != names:
                raise DigestError(
                    "model files were renamed with their digest unchanged "
                    f"(OMS digest {result.root.hex()[:16]}...): refusing to use them"
                )
            return result.root, result.stamps
        return model_digest(self.model_path), None

    def _stamp_now(self) -> tuple[object, object]:
        prompt_stamp: object = None
        if self.prompt_path is not None:
            try:
                st = os.stat(self.prompt_path)
            except OSError as exc:
                raise DigestError(f"cannot read prompt file: {exc.strerror}") from None
            # ctime too: an in-place rewrite whose mtime was set back still moves the ctime
            prompt_stamp = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)
        else:
            prompt_stamp = self.prompt_bytes
        return (self._model_stamp(), prompt_stamp)

    def _compute(self) -> tuple[Provenance, object | None]:
        if self.prompt_path is not None:
            prompt = _prompt_file_digest(self.prompt_path)
        else:
            assert self.prompt_bytes is not None
            prompt = prompt_digest(self.prompt_bytes)
        model, hashed = self._model_digest()
        value = Provenance(
            self.model_type,
            model,
            prompt,
            None if self.config is None else config_digest(self.config),
            model_digest_scheme=ModelDigestScheme.parse(self.model_scheme),
        )
        return value, hashed

    def current(self) -> Provenance:
        """The running provenance (recomputed if a file changed since the last check)."""
        now = self.clock()
        with self._lock:
            if self._value is not None and now - self._checked < self.recheck_seconds:
                return self._value
            stamp = self._stamp_now()
            if self._value is None or stamp != self._stamp:
                self._value, hashed = self._compute()
                # OMS: the stamps of the descriptors actually hashed, so a file swapped
                # between the stat above and the hashing is seen at the next check
                self._stamp = stamp if hashed is None else (hashed, stamp[1])
            self._checked = now
            return self._value

    def recheck_due(self) -> bool:
        """True if :meth:`current` would look at the files (stat, maybe hash) now."""
        with self._lock:
            return self._value is None or self.clock() - self._checked >= self.recheck_seconds

    def refresh(self) -> Provenance:
        """Recompute now, whatever the recheck interval."""
        with self._lock:
            self._checked = -1e18
        return self.current()

    def set_prompt(self, data: bytes) -> None:
        """Replace an in-memory prompt (takes effect at once)."""
        with self._lock:
            self.prompt_bytes = data
            self.prompt_path = None
            self._checked = -1e18
