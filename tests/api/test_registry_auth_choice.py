"""api.registry_auth: which credential a request's image may use, on the manager."""

from __future__ import annotations

import pytest

from swarmlet.api.registry import Credentials
from swarmlet.api.registry_auth import check_for_image, for_pinning, requested
from swarmlet.errors import UsageError
from swarmlet.executor.registry_auth import RegistryCredential

CREDENTIAL = RegistryCredential("127.0.0.1:5000", "u", "p")


def test_a_request_s_credential_is_checked_for_shape() -> None:
    assert requested(None) is None
    assert requested(CREDENTIAL.as_mapping()) == CREDENTIAL
    for bad in ({"registry": "r", "username": "u"}, "u:p", {"registry": 1, "username": "u"}):
        with pytest.raises(UsageError, match="registry_auth"):
            requested(bad)


def test_a_credential_for_another_registry_than_the_image_s_is_refused() -> None:
    check_for_image(CREDENTIAL, "127.0.0.1:5000/web:1")
    check_for_image(None, "elsewhere.io/web:1")
    with pytest.raises(UsageError, match=r"is for 127\.0\.0\.1:5000, and the image"):
        check_for_image(CREDENTIAL, "elsewhere.io/web:1")


def test_the_digest_is_resolved_with_the_credential_of_that_registry_only() -> None:
    assert for_pinning(CREDENTIAL, "127.0.0.1:5000/web:1") == Credentials("u", "p")
    assert for_pinning(CREDENTIAL, "127.0.0.1:5001/web:1") is None  # a service moved on
    assert for_pinning(None, "127.0.0.1:5000/web:1") is None
