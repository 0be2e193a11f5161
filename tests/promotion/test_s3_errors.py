"""How S3 failures are classified, on the real HTTP stack: the fault proxy in front of SeaweedFS."""

from __future__ import annotations

import pytest

from promotion.errors import InfrastructureError, StoreUnavailable, is_transient
from promotion.local_s3 import LocalS3
from promotion.s3 import S3
from promotion.store import ArtifactStore
from tests.faultproxy import FaultProxy, Rule, proxied_pipeline


@pytest.mark.parametrize("action", ["reset", "drop_response"])
def test_a_connection_closed_before_an_answer_is_a_transient_infrastructure_error(
    action: str, s3_server: LocalS3, prefix: str
) -> None:
    """botocore reports it as ConnectionClosedError; it must never read as a verdict on an object."""
    with FaultProxy(s3_server.endpoint_url) as proxy:
        store = ArtifactStore(proxied_pipeline(s3_server, prefix, proxy))
        s3: S3 = store.s3
        s3.put(s3.key("probe"), b"x")
        proxy.rules.append(Rule("GET", r"/probe$", action, times=-1))
        with pytest.raises(StoreUnavailable) as caught:
            s3.get(s3.key("probe"))
    assert isinstance(caught.value, InfrastructureError) and is_transient(caught.value)
    assert "no answer from" in str(caught.value)
