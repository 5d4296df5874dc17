"""Persistence shell: SQLAlchemy 2 models, engine setup, migrations and repositories."""
