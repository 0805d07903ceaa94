"""Users, tokens and a live gunicorn serving the test database, for the API tests."""

from __future__ import annotations

import secrets

import pytest
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient


def client_from(address: str | None = None, token: str | None = None) -> APIClient:
    """A client with its own random REMOTE_ADDR: throttle counters live in Redis and outlive a test run."""
    random_address = "10." + ".".join(str(secrets.randbelow(254) + 1) for _ in range(3))
    client = APIClient(REMOTE_ADDR=address or random_address)
    if token:
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


@pytest.fixture
def staff(db):
    user = User.objects.create_user("staff", password="staff-pass-123", is_staff=True)
    return user, Token.objects.create(user=user).key


@pytest.fixture
def reader(db):
    user = User.objects.create_user("reader", password="reader-pass-123")
    return user, Token.objects.create(user=user).key


@pytest.fixture
def staff_api(staff):
    return client_from(token=staff[1])


@pytest.fixture
def reader_api(reader):
    return client_from(token=reader[1])


@pytest.fixture
def anon_api():
    return client_from()
