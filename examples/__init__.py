"""agentca examples: the limit-order scenario (``make demo``)."""
