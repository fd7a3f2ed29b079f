"""A server that is one of several refuses the stores that live on one machine."""

from __future__ import annotations

import pytest
from django.db import connection

from debusine.server.project.multi_server import (
    MultiServerError,
    check_can_start,
    local_stores_in_use,
)

pytestmark = pytest.mark.django_db


def database_url() -> str:
    params = connection.settings_dict
    host = params["HOST"]
    where = f"{host}:{params['PORT']}" if not host.startswith("/") else ""
    query = f"?host={host}" if host.startswith("/") else ""
    user = f"{params['USER']}@" if params["USER"] else ""
    return f"postgresql://{user}{where}/{params['NAME']}{query}"


def test_the_default_local_store_is_refused_with_its_scope() -> None:
    url = database_url()
    stores = local_stores_in_use(url)
    assert [(store.name, store.backend) for store in stores] == [("Default", "Local")]
    with pytest.raises(MultiServerError) as raised:
        check_can_start(True, url)
    message = str(raised.value)
    assert "DEBUSINE_MULTI_SERVER" in message
    assert "Default (Local, used by scope debusine)" in message
    assert "\n" not in message


def test_a_single_server_may_use_local_stores() -> None:
    check_can_start(False, database_url())


def test_check_reports_e009_only_for_one_of_several_servers() -> None:
    from django.test import override_settings

    from debusine.server.project.checks import check_multi_server_stores

    with override_settings(DEBUSINE_MULTI_SERVER=True, DEBUSINE_DATABASE_URL=database_url()):
        [error] = check_multi_server_stores()
        assert error.id == "debusine.E009"
        assert "Default (Local, used by scope debusine)" in error.msg
        # Under `migrate` (which passes its databases) the stores may not exist yet.
        assert check_multi_server_stores(databases=["default"]) == []
    with override_settings(DEBUSINE_MULTI_SERVER=False, DEBUSINE_DATABASE_URL=database_url()):
        assert check_multi_server_stores() == []
