"""prefect-promotion: promote immutable, content-addressed artifacts through environments.

This package is the core: it never imports Prefect at module level, so the CLI commands that only
touch S3 start fast. The Prefect layer lives in the top-level ``flows``, ``tasks`` and ``blocks``
packages.
"""

__version__ = "0.1.0"
