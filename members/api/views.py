from drf_spectacular.utils import extend_schema
from rest_framework.generics import ListAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from exchange.bodies import body_of
from exchange.pagination import OldestFirst
from hashx.keys import possession_statement
from members.access import access_key, access_keys
from members.actions.keys import (
    CHALLENGE_SECONDS,
    check_possession,
    check_public_key,
    do_add_key,
    do_retire_key,
    do_revoke_key,
    issue_challenge,
)
from members.api.serializers import (
    AddKeySerializer,
    ChallengeSerializer,
    KeySerializer,
    RetireSerializer,
    RevokeSerializer,
    WhoamiSerializer,
    whoami_document,
)
from members.principal import MemberPrincipal, organisation_of


class WhoamiView(APIView):
    @extend_schema(operation_id="whoami", tags=["members"], responses=WhoamiSerializer)
    def get(self, request: Request) -> Response:
        """Who the signature on this request speaks for: organisation, key, permissions."""
        principal = request.user
        assert isinstance(principal, MemberPrincipal)
        return Response(whoami_document(principal.organisation, principal.key))


class KeyListView(ListAPIView):
    serializer_class = KeySerializer
    pagination_class = OldestFirst

    @extend_schema(operation_id="keys_list", tags=["members"])
    def get(self, request: Request) -> Response:
        """Your organisation's keys, in every state, oldest first; paged by opaque cursor."""
        return self.list(request)

    def get_queryset(self):  # type: ignore[no-untyped-def]
        return access_keys(organisation_of(self.request))

    @extend_schema(
        operation_id="keys_add",
        tags=["members"],
        request=AddKeySerializer,
        responses={201: KeySerializer},
    )
    def post(self, request: Request) -> Response:
        """Add a key. First get a challenge (POST /api/v1/keys/challenge); the new key signs
        the possession statement, proving you hold it."""
        org = organisation_of(request)
        serializer = AddKeySerializer(data=body_of(request))
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        public_raw = check_public_key(data["public_key"])
        check_possession(org, public_raw, data["challenge"], data["proof"])
        key = do_add_key(
            org, public_raw, label=data["label"], read_only=data["read_only"], request=request
        )
        return Response(KeySerializer(key).data, status=201)


class KeyChallengeView(APIView):
    @extend_schema(
        operation_id="keys_challenge",
        tags=["members"],
        request=None,
        responses={201: ChallengeSerializer},
    )
    def post(self, request: Request) -> Response:
        """A one-time challenge (five minutes) for proving possession of a key you add."""
        org = organisation_of(request)
        challenge = issue_challenge(org)
        template = possession_statement(challenge, org.slug, "<key_id of the new key>").decode()
        return Response(
            {"challenge": challenge, "expires_in": CHALLENGE_SECONDS, "statement": template},
            status=201,
        )


class KeyRevokeView(APIView):
    @extend_schema(
        operation_id="keys_revoke",
        tags=["members"],
        request=RevokeSerializer,
        responses=KeySerializer,
    )
    def post(self, request: Request, key_id: str) -> Response:
        """Revoke a key now, with a reason: the next request it signs is refused."""
        key = access_key(organisation_of(request), key_id)
        serializer = RevokeSerializer(data=body_of(request))
        serializer.is_valid(raise_exception=True)
        key = do_revoke_key(key, serializer.validated_data["reason"], request=request)
        return Response(KeySerializer(key).data)


class KeyRetireView(APIView):
    @extend_schema(
        operation_id="keys_retire",
        tags=["members"],
        request=RetireSerializer,
        responses=KeySerializer,
    )
    def post(self, request: Request, key_id: str) -> Response:
        """Retire a key for rotation: it keeps verifying until ``not_after``."""
        key = access_key(organisation_of(request), key_id)
        serializer = RetireSerializer(data=body_of(request))
        serializer.is_valid(raise_exception=True)
        key = do_retire_key(key, serializer.validated_data["not_after"], request=request)
        return Response(KeySerializer(key).data)
