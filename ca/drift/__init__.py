"""Behavioural drift: per-agent baselines from the action ledger, window scores, responses.

The core (``settings``, ``baseline``, ``features``, ``analyser``) is pure: it takes
:class:`wire.actions.ActionRecord` values and instants as arguments, reads no clock and opens
no database, so the benchmark, the tests and ``agentca drift run`` drive the very same code
(decision 0057). ``source`` is the seam to where records come from; ``respond`` and
``alerts`` are the shell that acts on a score.
"""
