"""The ``agentca`` command line: thin click commands over the CA core."""
