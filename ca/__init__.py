"""agentca: the certificate authority core (pure builders, policy) and its shells."""
