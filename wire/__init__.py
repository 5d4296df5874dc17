"""agentca's wire format, shared by the CA, the agent SDK and the gateway SDK.

It depends only on the standard library and cryptography, and imports nothing of the server.
"""
