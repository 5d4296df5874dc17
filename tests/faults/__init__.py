"""Fault injection against real PostgreSQL, SoftHSM2 and gunicorn (issue 10).

Every test here is bounded (seconds, a few processes) and stops by itself. ``make test`` runs
them in their short form; ``make faults`` sets ``AGENTCA_FAULTS_FULL=1`` for longer outages
and the soak. Figures go in docs/reliability.md.
"""

import os

FULL = os.environ.get("AGENTCA_FAULTS_FULL") == "1"
