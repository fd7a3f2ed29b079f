"""Tests of the problem+json error path shared by every API view."""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from debusine.server.api.errors import PROBLEM_CONTENT_TYPE, ProblemError
from debusine.server.db.models import Scope


class WritesThenFails(APIView):
    """A view that changes the database and then reports bad input."""

    authentication_classes = []

    def post(self, request: Request) -> Response:
        Scope.objects.create(name="should-not-exist")
        raise ProblemError("Bad input", "nothing may change", status_code=400)


@pytest.mark.django_db(transaction=True)
def test_problem_error_rolls_back_the_request_transaction() -> None:
    assert connection.settings_dict["ATOMIC_REQUESTS"]
    view = WritesThenFails.as_view()
    # ATOMIC_REQUESTS wraps views in BaseHandler; here we wrap the view the same way.
    request = APIRequestFactory().post("/api/1.0/x/", {}, format="json")
    with transaction.atomic():
        response = view(request)
    response.render()
    assert response.status_code == 400
    assert response["Content-Type"] == PROBLEM_CONTENT_TYPE
    assert response.data == {"title": "Bad input", "detail": "nothing may change"}
    assert not Scope.objects.filter(name="should-not-exist").exists()
