"""Mutual TLS for the agent: an ``ssl.SSLContext`` that presents the agent's certificate.

    ctx = agent_tls_context(agent, cafile="server-ca.pem")
    agent.request("POST", "https://gw.example/orders", json_body=order, tls_context=ctx)
    urllib.request.urlopen(url, context=ctx)           # or http.client.HTTPSConnection(context=ctx)

The context presents the certificate, its intermediates (the trust anchor is left out, as TLS
wants) and the key, and verifies the server against the given CA bundle (hostname checked).
It holds the certificate it was built with: build a new one after each renewal (cheap).

Python's ``ssl`` loads keys only from files. The key never reaches a disk here: on Linux the
PEM goes into an anonymous in-memory file (``memfd_create``) that OpenSSL opens through
``/proc/self/fd/N`` and that is closed right after ``load_cert_chain``. Where that is not
available, the PEM is written to a file of mode 0600 in a private (0700) temporary directory,
both removed right after ``load_cert_chain`` returns or fails. In both cases the key is
encrypted (PKCS#8, a fresh random password passed to ``load_cert_chain`` in memory), so even
the short-lived file holds no usable key. A key that cannot be exported (a PKCS#11 token key)
cannot be used by Python's ``ssl``: that raises :class:`~agent.errors.AgentError`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import ssl
import tempfile
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from agent.errors import AgentError
from agent.keys import AgentKey

if TYPE_CHECKING:
    from agent.client import Agent


def _key_pem(key: AgentKey, password: bytes) -> bytes:
    try:
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(password),
        )
    except Exception as exc:  # a token key refuses to be exported
        raise AgentError(
            f"the agent key cannot be used for TLS by Python's ssl ({type(exc).__name__}): "
            "it must be exportable (a PKCS#11 key needs a TLS stack that signs in the token)"
        ) from None


@contextlib.contextmanager
def _memory_file(fd: int, data: bytes) -> Iterator[str]:
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


@contextlib.contextmanager
def _private_file(data: bytes) -> Iterator[str]:
    directory = tempfile.mkdtemp(prefix="agentca-tls-")  # mode 0700
    path = os.path.join(directory, "credential.pem")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        yield path
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _credential_file(data: bytes) -> contextlib.AbstractContextManager[str]:
    """An in-memory file if the platform has one, else a private temporary file."""
    if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
        try:
            fd = os.memfd_create("agentca-tls", os.MFD_CLOEXEC)
        except OSError:  # e.g. a sandbox without the system call
            pass
        else:
            return _memory_file(fd, data)
    return _private_file(data)


def load_client_credential(
    context: ssl.SSLContext,
    key: AgentKey,
    certificate: x509.Certificate,
    chain: Sequence[x509.Certificate] = (),
) -> None:
    """Make ``context`` present ``certificate`` (+ the non-self-signed members of ``chain``)
    with ``key``; raises :class:`AgentError` if they do not belong together."""
    if certificate.public_key() != key.public_key():
        raise AgentError("the certificate does not certify this key")
    intermediates = [c for c in chain if c.subject != c.issuer]
    password = secrets.token_urlsafe(24).encode()
    pem = b"".join(
        c.public_bytes(serialization.Encoding.PEM) for c in (certificate, *intermediates)
    )
    with _credential_file(pem + _key_pem(key, password)) as path:
        try:
            context.load_cert_chain(path, password=password)
        except ssl.SSLError as exc:
            raise AgentError(f"TLS refused the agent credential: {exc}") from None


def client_tls_context(
    key: AgentKey,
    certificate: x509.Certificate,
    chain: Sequence[x509.Certificate] = (),
    *,
    cafile: str | os.PathLike[str] | None = None,
    cadata: str | bytes | None = None,
    minimum_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2,
) -> ssl.SSLContext:
    """A client context presenting the agent credential, verifying the server against
    ``cafile``/``cadata`` (PEM; the system store if neither is given), hostname checked."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile, cadata=cadata)
    context.minimum_version = minimum_version
    load_client_credential(context, key, certificate, chain)
    return context


def agent_tls_context(
    agent: Agent,
    *,
    cafile: str | os.PathLike[str] | None = None,
    cadata: str | bytes | None = None,
) -> ssl.SSLContext:
    """:func:`client_tls_context` for the agent's current key and credential."""
    cred = agent.credential
    return client_tls_context(agent.key, cred.certificate, cred.chain, cafile=cafile, cadata=cadata)
