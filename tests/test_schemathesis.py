"""Schemathesis against the running platform (real PostgreSQL, Redis, Ray),
driven by the served OpenAPI document: every operation gets generated
requests, valid ones and invalid ones, with a verified moderator's bearer
token, and every response must be no server error, carry a status the
document lists and a body that conforms to it. A stateful run follows the
document's links through the auth flow (login, refresh, logout).

The runs are seeded (`derandomize`), so CI sees the same cases every time.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests import factories
from unimatch.domain.config import Config
from unimatch.storage.pg import Database

CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]
EXAMPLES = {GenerationMode.POSITIVE: 30, GenerationMode.NEGATIVE: 15}
MIN_CASES = 1000
STATEFUL_SCENARIOS = 12


def _settings(examples: int, **extra: Any) -> settings:
    return settings(
        **extra,
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
    )


@dataclass(frozen=True)
class World:
    """A verified moderator with a complete profile (every permission a
    generated request can meet), matched with a partner who sent a message,
    with a webhook and a report: the ids valid requests put in paths, so
    they reach past 404 to the bodies the document describes."""

    user: factories.TestUser
    partner: factories.TestUser
    ids: dict[str, str]


@pytest.fixture(scope="session")
def world(platform: Any, config: Config) -> World:
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(_world(platform.url, config))
    finally:
        loop.close()


async def _world(url: str, config: Config) -> World:
    assert config.database_url
    database = await Database.connect(config.database_url, size=1, overflow=0)
    try:
        user = await factories.make_user(database, config, role="moderator", name="Fuzz Mod")
        partner = await factories.make_user(database, config, name="Fuzz Partner")
        for _ in range(3):  # someone to discover
            await factories.make_user(database, config)
    finally:
        await database.close()
    async with aiohttp.ClientSession(base_url=url) as http:
        for a, b in ((user, partner), (partner, user)):
            async with http.post("/api/v1/swipes", headers=a.auth,
                                 json={"target_id": str(b.id), "action": "like"}) as response:
                assert response.status == 201, await response.text()
                swipe = await response.json()
        match_id = swipe["match_id"]
        async with http.post(f"/api/v1/matches/{match_id}/messages", headers=partner.auth,
                             json={"client_msg_id": "fuzz-1", "body": "Habari!"}) as response:
            assert response.status == 201, await response.text()
        async with http.post("/api/v1/webhooks", headers=user.auth,
                             json={"url": "https://127.0.0.1:9/hook", "events": ["match"]}
                             ) as response:
            assert response.status == 201, await response.text()
            webhook_id = (await response.json())["webhook_id"]
        async with http.post("/api/v1/reports", headers=user.auth,
                             json={"reported_user_id": str(partner.id), "reason": "spam"}
                             ) as response:
            assert response.status == 201, await response.text()
            report_id = (await response.json())["report_id"]
    return World(user, partner, {"match_id": match_id, "user_id": str(partner.id),
                                 "webhook_id": webhook_id, "report_id": report_id})


def _last(operation: Any) -> bool:
    """Operations that end what others read (unmatch, deletes, suspensions)
    run after the rest."""
    return operation.method.lower() == "delete" or "/moderation/" in operation.path


@pytest.fixture(scope="session")
def served_schema(platform: Any) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{platform.url}/api/v1/openapi.json")


def test_every_operation_answers_generated_requests_as_documented(
    platform: Any, world: World, served_schema: schemathesis.BaseSchema
) -> None:
    cases: Counter[str] = Counter()
    failures: dict[str, str] = {}
    operations = sorted((r.ok() for r in served_schema.get_all_operations()), key=_last)
    with requests.Session() as session:
        for operation in operations:
            for mode, examples in EXAMPLES.items():
                try:
                    _fuzz(operation, mode, examples, session, platform.url, world, cases)
                except Unsatisfiable:
                    continue  # nothing to make invalid (an operation without inputs)
                except (Exception, BaseExceptionGroup) as exc:  # schemathesis' FailureGroup
                    failures[f"{operation.label} ({mode.value})"] = str(exc)[:2000]
    assert not failures, "\n\n".join(f"{k}:\n{v}" for k, v in failures.items())
    labels = {operation.label for operation in operations}
    assert set(cases) == labels, labels - set(cases)
    assert sum(cases.values()) >= MIN_CASES, cases


def _fuzz(
    operation: Any,
    mode: GenerationMode,
    examples: int,
    session: requests.Session,
    base_url: str,
    world: World,
    cases: Counter[str],
) -> None:
    names = {p.name for p in operation.path_parameters} if mode.is_positive else set()
    known = {name: world.ids[name] for name in names if name in world.ids}
    strategy = operation.as_strategy(generation_mode=mode, path_parameters=known or None)

    @given(case=strategy)
    @_settings(examples)
    def run(case: schemathesis.Case) -> None:
        cases[operation.label] += 1
        # The document's bearer scheme makes schemathesis send a token of its
        # own: ours replaces it, so requests get past authentication.
        case.headers = {**(case.headers or {}), **world.user.auth}
        response = case.call(base_url=base_url, session=session)
        case.validate_response(response, checks=CHECKS)

    run()


def test_auth_flow_follows_the_documents_links(
    platform: Any, world: World, served_schema: schemathesis.BaseSchema
) -> None:
    """Login with real credentials, then whatever the links lead to
    (refresh, logout, resend...), with the same checks on every step."""
    auth_flow = served_schema.include(tag="auth")
    base = auth_flow.as_state_machine()
    steps: Counter[str] = Counter()

    class AuthFlow(base):  # type: ignore[misc, valid-type]
        def before_call(self, case: schemathesis.Case) -> None:
            if case.operation.label == "POST /api/v1/auth/login":
                case.body = {"email": world.user.email, "password": factories.PASSWORD}

        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
            return {"base_url": platform.url}

        def validate_response(
            self, response: Any, case: schemathesis.Case, **kwargs: Any
        ) -> None:
            steps[f"{case.operation.label} {response.status_code}"] += 1
            case.validate_response(response, checks=CHECKS)

    AuthFlow.run(settings=_settings(STATEFUL_SCENARIOS, stateful_step_count=6))
    assert steps["POST /api/v1/auth/login 200"] > 0, steps
    assert any(step.startswith("POST /api/v1/auth/refresh 200") for step in steps), steps
