import os

import pytest

# Tests never talk to real AWS: dummy credentials, a fixed region, no endpoint leaking in.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("AWS_REGION", "us-east-1")
for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
    os.environ.pop(var, None)


@pytest.fixture(autouse=True)
def _fresh_settings():
    from chalicelib.config import get_settings

    get_settings.cache_clear()
    yield
    get_settings.cache_clear()
