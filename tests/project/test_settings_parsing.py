"""Settings: comma lists, placeholder and malformed secrets refused, secrets kept out of repr.

(.env.example against Settings: tests/project/test_operations.py; every validation rule:
tests/project/test_settings.py.)"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gateway.settings import Settings


def test_settings_parse_csv_and_refuse_placeholders() -> None:
    s = Settings(_env_file=None, GATEWAY_API_KEYS="k1, k2,", GATEWAY_RETRY_SCHEDULE="0,1.5")  # type: ignore[call-arg]
    assert s.api_keys == {"k1", "k2"}
    assert s.GATEWAY_RETRY_SCHEDULE == [0, 1.5]
    with pytest.raises(ValidationError, match="placeholder"):
        Settings(_env_file=None, GATEWAY_API_KEYS="changeme")  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="whsec_"):
        Settings(_env_file=None, GATEWAY_WEBHOOK_SECRET="plain-secret-value-123")  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="whsec_"):
        Settings(_env_file=None, GATEWAY_WEBHOOK_SECRET="whsec_not*base64*at*all*but*long")  # type: ignore[call-arg]
    ok = Settings(_env_file=None, GATEWAY_WEBHOOK_SECRET="whsec_" + "QUJD" * 10)  # type: ignore[call-arg]
    assert ok.GATEWAY_WEBHOOK_SECRET is not None
    with pytest.raises(ValidationError):
        Settings(_env_file=None, GATEWAY_RETRY_SCHEDULE="5,-1")  # type: ignore[call-arg]


def test_secrets_do_not_show_in_repr() -> None:
    s = Settings(_env_file=None, PLIVO_AUTH_TOKEN="tok-very-secret", GATEWAY_API_KEYS="key-very-secret")  # type: ignore[call-arg]
    assert "very-secret" not in repr(s)
    assert "very-secret" not in str(s.model_dump())
