"""RFC 6960 OCSP responder: pure request parsing, decisions and response building, plus the
thin shells around them (read-only status source, response cache, Flask/gunicorn app)."""
