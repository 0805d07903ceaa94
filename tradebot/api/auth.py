"""Token login. DRF `authtoken` tokens (one per user, stored in the database, sent as `Authorization: Token <key>`):
revoked at once by deleting the row or rotating it (`manage.py drf_create_token -r USER`), no refresh dance and no
extra dependency. JWT's selling point — verifying without a database hit — buys nothing here: every API request
reads the database anyway, and a JWT cannot be revoked before it expires."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiExample, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.authtoken.models import Token
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from tradebot.api.throttling import LoginThrottle

TokenResponse = inline_serializer("TokenResponse", {"token": serializers.CharField()})


class TokenView(APIView):
    """POST username + password, get the user's API token (created on first use)."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [LoginThrottle]
    serializer_class = AuthTokenSerializer

    @extend_schema(
        request=AuthTokenSerializer,
        responses={200: TokenResponse},
        auth=[],
        examples=[OpenApiExample("login", value={"username": "alice", "password": "secret"}, request_only=True)],
        description="Exchange a username and password for the user's token. Send it as `Authorization: Token <key>`. "
        "Throttled per client address (`login` rate).",
    )
    def post(self, request):
        serializer = AuthTokenSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        token, _ = Token.objects.get_or_create(user=serializer.validated_data["user"])
        return Response({"token": token.key})
