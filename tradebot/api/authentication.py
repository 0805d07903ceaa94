"""Token authentication with the lookup in one plain query (the token joined to its user, both rows built with
`Model.from_db`): the ORM's `select_related("user").get(key=...)` spent ~0.45 ms of CPU building that query on every
API request, a quarter of a 1,000-row candle page's worker time (bench/api.py). Still one database read per request,
so a deleted token or a deactivated user is refused at once, as with DRF's class it replaces."""

from __future__ import annotations

import functools

from django.db import connection
from django.utils.translation import gettext_lazy as _
from rest_framework import authentication, exceptions


class TokenAuthentication(authentication.TokenAuthentication):
    def authenticate_credentials(self, key):
        model = self.get_model()
        user_field = model._meta.get_field("user")
        user_model = user_field.related_model
        sql, token_fields, user_fields = _lookup(model)
        with connection.cursor() as cur:
            cur.execute(sql, [key])
            row = cur.fetchone()
        if row is None:
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        token = model.from_db(connection.alias, token_fields, row[:len(token_fields)])
        user = user_model.from_db(connection.alias, user_fields, row[len(token_fields):])
        user_field.set_cached_value(token, user)
        if not user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        return user, token


@functools.lru_cache(maxsize=2)
def _lookup(model) -> tuple[str, list[str], list[str]]:
    """The token-and-user query and the two rows' field names, built once per token model."""
    user_field = model._meta.get_field("user")
    user_model = user_field.related_model
    token_fields = [f.attname for f in model._meta.concrete_fields]
    user_fields = [f.attname for f in user_model._meta.concrete_fields]
    columns = [f't."{f.column}"' for f in model._meta.concrete_fields]
    columns += [f'u."{f.column}"' for f in user_model._meta.concrete_fields]
    sql = (f"SELECT {', '.join(columns)} FROM {model._meta.db_table} t "
           f'JOIN {user_model._meta.db_table} u ON u."{user_model._meta.pk.column}" = '
           f't."{user_field.column}" WHERE t."{model._meta.pk.column}" = %s')
    return sql, token_fields, user_fields
