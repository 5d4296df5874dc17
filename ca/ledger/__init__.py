"""The auditor ledger: an append-only, RFC 9162-style Merkle log of every state change."""
