"""Alembic migration environment for agentca (``ca.store.db.upgrade`` runs it)."""
