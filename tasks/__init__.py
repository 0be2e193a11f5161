"""Prefect tasks: thin ``@task`` wrappers over the pure units of work in ``promotion``."""
