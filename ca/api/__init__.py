"""The CA HTTP API (Flask shell over the CA service)."""
