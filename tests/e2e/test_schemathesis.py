"""schemathesis drives the local stack from the document it serves (GET /openapi.json): every
answer must be documented (status, content type, body schema, error codes), schema-invalid input
must get a 4xx, and nothing may answer 5xx. Bounded: a few dozen examples per operation."""
from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import ignored_auth, positive_data_acceptance

from tests import openapi

from .conftest import http

pytestmark = pytest.mark.usefixtures("show_log_on_failure")

# A URL the SSRF guard refuses at once (port 9 is not allowed), without a DNS lookup: the tests
# reach nothing beyond 127.0.0.1, and a generated "http://a.bc/" would be resolved.
LOCAL_URL = "http://127.0.0.1:9/generated.mp3"


@pytest.fixture(scope="session")
def api_schema(stack):
    return schemathesis.openapi.from_url(f"{stack.api}/openapi.json")


# One test per operation, from the committed file (the served one is checked to be the same).
OPERATIONS = [(path, method.upper()) for path, item in openapi.document()["paths"].items() for method in item]


def _no_outside_urls(body):
    """Point every generated URL (parts, webhook) at LOCAL_URL; the rest of the case is kept."""
    if not isinstance(body, dict):
        return
    if isinstance(body.get("webhook_url"), str):
        body["webhook_url"] = LOCAL_URL
    parts = body.get("message_parts")
    for part in parts if isinstance(parts, list) else []:
        if isinstance(part, dict) and isinstance(part.get("url"), str):
            part["url"] = LOCAL_URL


@pytest.mark.parametrize("path, method", OPERATIONS, ids=[f"{m} {p}" for p, m in OPERATIONS])
def test_api_conforms_to_its_document(api_schema, stack, path, method):
    # Not schemathesis.pytest.from_fixture: it reads a pytest private attribute that pytest 9 removed.
    operation = api_schema[path][method]
    strategy = operation.as_strategy(GenerationMode.POSITIVE)
    if operation.definition.raw.get("parameters") or operation.definition.raw.get("requestBody"):
        # Half valid, half invalid input: invalid must be a documented 4xx.
        strategy = st.one_of(strategy, operation.as_strategy(GenerationMode.NEGATIVE))

    @given(case=strategy)
    @settings(max_examples=30, deadline=None, database=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    def run(case):
        _no_outside_urls(case.body)
        # Excluded: schema-valid bodies may still be refused (a key not in the bucket is a 400), and
        # the local stack, like `chalice local`, does not enforce API keys.
        case.call_and_validate(base_url=stack.api, excluded_checks=[positive_data_acceptance, ignored_auth],
                               timeout=60)

    run()


def test_served_document_is_the_file(stack):
    reply = http("GET", f"{stack.api}/openapi.json")
    assert reply.status == 200 and reply.headers["Content-Type"] == "application/json"
    assert reply.json() == openapi.document()
