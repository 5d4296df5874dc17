"""Sign rate through one KeyStore (SoftHSM2) versus cryptography's in-memory keys, same run.

Usage: python bench/bench_hsm.py [--seconds 2] [--data-dir DIR]
(default: a throwaway token in a temporary directory).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from hsm import KeyStore, KeyType, ensure_softhsm_token


def rate(fn: Callable[[bytes], bytes], seconds: float) -> float:
    """Signatures per second of ``fn`` over distinct 64-byte messages for ``seconds``."""
    for i in range(50):  # warm up
        fn(i.to_bytes(64, "big"))
    count, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(100):
            fn(count.to_bytes(64, "big"))
            count += 1
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-hsm-") as tmp:
        config = ensure_softhsm_token(args.data_dir or Path(tmp), label="bench")
        store = KeyStore(config)
        stamp = time.strftime("%H%M%S")
        ecdsa, pkcs1 = ec.ECDSA(hashes.SHA256()), padding.PKCS1v15()
        hsm_ec = store.generate(f"bench-p256-{stamp}", KeyType.EC_P256)
        hsm_rsa = store.generate(f"bench-rsa2048-{stamp}", KeyType.RSA_2048)
        assert isinstance(hsm_ec, ec.EllipticCurvePrivateKey)
        assert isinstance(hsm_rsa, rsa.RSAPrivateKey)
        mem_ec = ec.generate_private_key(ec.SECP256R1())
        mem_rsa = rsa.generate_private_key(65537, 2048)
        rows = [
            (
                "ECDSA P-256 / SHA-256",
                rate(lambda m: hsm_ec.sign(m, ecdsa), args.seconds),
                rate(lambda m: mem_ec.sign(m, ecdsa), args.seconds),
            ),
            (
                "RSA-2048 PKCS#1 v1.5 / SHA-256",
                rate(lambda m: hsm_rsa.sign(m, pkcs1, hashes.SHA256()), args.seconds),
                rate(lambda m: mem_rsa.sign(m, pkcs1, hashes.SHA256()), args.seconds),
            ),
        ]
        store.close()
    print(f"{'algorithm':32} {'HSM signs/s':>12} {'in-memory/s':>12} {'HSM/in-memory':>14}")
    for name, hsm_rate, mem_rate in rows:
        print(f"{name:32} {hsm_rate:12.0f} {mem_rate:12.0f} {hsm_rate / mem_rate:14.2f}")


if __name__ == "__main__":
    main()
