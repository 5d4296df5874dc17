# agentca's own gunicorn option (``cli.gunicorn_app`` consumes it, gunicorn never sees it): the
# master binds one listening socket with SO_REUSEPORT and hands it to gunicorn as ``fd://N``.
# gunicorn's ``reuse_port`` instead gives every worker its own socket, whose backlog is lost
# when that worker is killed. Decision 0015.
SHARED_REUSE_PORT = "agentca_shared_reuse_port"
