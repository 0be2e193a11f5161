"""Prefect blocks holding configuration and credentials."""
