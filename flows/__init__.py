"""Prefect flows that orchestrate promotions (the pipeline, per-stage subflows, rollback)."""
