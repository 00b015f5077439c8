"""The project's URLs plus one echo endpoint that parses and validates a body, so the problem
mapping can be tried on malformed, oversized and invalid input before real endpoints exist."""

from django.urls import include, path
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView


class ItemSerializer(serializers.Serializer):
    value = serializers.CharField(max_length=8)


class EchoSerializer(serializers.Serializer):
    name = serializers.CharField()
    items = ItemSerializer(many=True)


class EchoView(APIView):
    authentication_classes = []
    permission_classes = [AllowAny]

    def post(self, request: Request) -> Response:
        serializer = EchoSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        return Response(serializer.validated_data)


urlpatterns = [path("api/v1/test-echo", EchoView.as_view()), path("", include("exchange.urls"))]
