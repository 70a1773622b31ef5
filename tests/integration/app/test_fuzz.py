"""The JSON API fuzzed from its own OpenAPI schema (schemathesis), on the real services.

Every operation is sent generated requests, valid then invalid, with an ops API key. No answer
may be a server error, and each must be what the schema says: a documented status, content
type, headers and body; invalid requests must be refused; a missing or wrong key must be
refused too (schemathesis re-sends successful requests without the key, and with a wrong one).

One check is left out: `positive_data_acceptance` (a request valid by the schema must not be
refused). The schema documents the categorical values and that a prediction id is a UUID,
but not every rule: a UUIDv7 rather than any UUID, or that a canary needs a weight strictly
between 0 and 100. The API refuses those with a documented 422 that names the field.

Invalid values that generation seldom tries (times off the calendar once in UTC, numbers sent
as booleans or strings) are sent as explicit cases through the same checks.

Schemathesis' pytest loader from a fixture (`schemathesis.pytest.from_fixture`) fails under
pytest 9.2 (it reads and sets `Node._nodeid`, which pytest 9.2 no longer has), and a schema
loaded at import time could not reach the session's services: so each operation's strategy
(`APIOperation.as_strategy`) runs under Hypothesis here, and every failure is reported.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, Final

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis.configuration import set_hypothesis_home_dir
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode
from schemathesis.core.failures import FailureGroup
from schemathesis.schemas import APIOperation
from schemathesis.specs.openapi.checks import positive_data_acceptance
from schemathesis.specs.openapi.schemas import OpenApiSchema
from tests.integration.app.conftest import Keys
from tests.integration.serving_fixtures import ServedMLServer

from telescore.app.main import create_app
from telescore.core.access import API_KEY_HEADER
from telescore.core.routing import RoutingConfig
from telescore.io.prospect_store import ProspectStore
from telescore.io.release_store import ReleaseStore
from telescore.jobs.indicators import read_indicators, set_indicators
from telescore.jobs.releases import set_routing
from telescore.settings import Settings

pytestmark = pytest.mark.integration

EXAMPLES_PER_OPERATION: Final = 25
"""Per operation and kind of data (valid, invalid)."""
MIN_OPERATIONS: Final = 14
"""The app's operations, health and readiness included: fewer means the schema lost some."""
UNKNOWN_PREDICTION: Final = "0190a5e5-6b1e-7000-8000-000000000000"
INDICATORS: Final = {
    "emp_var_rate": 1.1,
    "cons_price_idx": 93.994,
    "cons_conf_idx": -36.4,
    "euribor3m": 4.857,
    "nr_employed": 5191.0,
}


def _outcome_at(when: str) -> dict[str, Any]:
    return {"prediction_id": UNKNOWN_PREDICTION, "subscribed": True, "reported_at": when}


RARE_INVALID_REQUESTS: Final = [
    # A valid time whose offset takes it off the calendar once in UTC.
    pytest.param(
        "POST", "/outcomes", _outcome_at("0001-01-01T00:00:00+23:59"), "reported_at", id="year-0"
    ),
    pytest.param(
        "POST",
        "/outcomes/batch",
        [_outcome_at("9999-12-31T23:59:59-23:59")],
        "reported_at",
        id="batch-year-10000",
    ),
    # A number given as a boolean or a string: the schema says number.
    pytest.param(
        "PUT",
        "/indicators",
        {"indicators": {**INDICATORS, "euribor3m": True}},
        "euribor3m",
        id="indicator-true",
    ),
    pytest.param(
        "PUT",
        "/indicators",
        {"indicators": {**INDICATORS, "euribor3m": "4.857"}},
        "euribor3m",
        id="indicator-string",
    ),
    pytest.param(
        "PUT",
        "/routing",
        {"mode": "canary", "canary_weight": True},
        "canary_weight",
        id="canary-weight-true",
    ),
    pytest.param(
        "PUT",
        "/routing",
        {"mode": "canary", "canary_weight": "50"},
        "canary_weight",
        id="canary-weight-string",
    ),
]


@pytest.fixture(scope="module", autouse=True)
def hypothesis_storage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Hypothesis keeps its caches in a temporary folder, not in `.hypothesis/` of the checkout."""
    set_hypothesis_home_dir(tmp_path_factory.mktemp("hypothesis"))
    yield
    set_hypothesis_home_dir(None)


@pytest.fixture
def api_schema(settings: Settings, mlserver: ServedMLServer) -> Iterator[OpenApiSchema]:
    """The app's schema, served by the app itself over ASGI (schemathesis runs its lifespan).

    Fuzzing may change the routing and the indicators in force: both are put back afterwards.
    """
    with ProspectStore(mlserver.mongodb_uri, mlserver.database) as store:
        indicators = read_indicators(store)
    loaded = schemathesis.openapi.from_asgi("/openapi.json", create_app(settings))
    try:
        yield loaded
    finally:
        schemathesis.python.asgi.shutdown_lifespans()
        with ReleaseStore(mlserver.mongodb_uri, mlserver.database) as store:
            set_routing(store, RoutingConfig(), "tests")
        if indicators is not None:
            with ProspectStore(mlserver.mongodb_uri, mlserver.database) as store:
                set_indicators(store, indicators.indicators, indicators.effective_from, "tests")


def _fuzz(operation: APIOperation, mode: GenerationMode, key: str) -> None:
    """Send generated requests to one operation; raise on the first answer failing a check."""

    # The key is a fixed header: an invalid request is invalid elsewhere, never for want of a key.
    @given(case=operation.as_strategy(generation_mode=mode, headers={API_KEY_HEADER: key}))
    @hypothesis.settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        # No example database: nothing is written into the checkout.
        database=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    def fuzz(case: Case) -> None:
        case.call_and_validate(excluded_checks=[positive_data_acceptance])

    fuzz()


def test_every_operation_answers_as_its_schema_says(
    api_schema: OpenApiSchema, keys: Keys, capsys: pytest.CaptureFixture[str]
) -> None:
    # given every operation of the app's schema
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= MIN_OPERATIONS, [operation.label for operation in operations]
    failures: dict[str, str] = {}
    ran: list[str] = []
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            label = f"{operation.label} ({mode.value} data)"
            started = time.monotonic()
            # when it is sent valid, then invalid, requests with an ops key
            try:
                _fuzz(operation, mode, keys.ops)
            except Unsatisfiable:
                # No parameter or body the schema constrains: nothing to make invalid.
                ran.append(f"{label}: nothing to make invalid")
                continue
            except (Exception, FailureGroup) as error:  # noqa: BLE001 - every failure reported
                failures[label] = _describe(error)
            ran.append(f"{label}: {time.monotonic() - started:.1f} s")
    with capsys.disabled():
        print("\nschemathesis, per operation:\n  " + "\n  ".join(ran))
    # then no answer is a server error, and each is what the schema says
    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())


@pytest.mark.parametrize(("method", "path", "body", "field"), RARE_INVALID_REQUESTS)
def test_invalid_values_that_fuzzing_rarely_sends_are_refused_naming_the_field(
    api_schema: OpenApiSchema, keys: Keys, method: str, path: str, body: Any, field: str
) -> None:
    # given a request invalid in one field, in a way generation seldom tries
    case = api_schema[path][method].Case(body=body, headers={API_KEY_HEADER: keys.ops})
    # when it is sent, then the answer passes the checks and refuses the field by name
    response = case.call_and_validate(excluded_checks=[positive_data_acceptance])
    assert response.status_code == 422, f"{field}: {response.status_code} {response.text}"
    assert field in response.text, f"the refusal should name {field}: {response.text}"


def _describe(error: BaseException) -> str:
    notes = "\n".join(getattr(error, "__notes__", []))
    return f"{type(error).__name__}: {error}\n{notes}".strip()
