"""How the OpenAPI document describes request signatures."""

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class SignatureScheme(OpenApiAuthenticationExtension):
    target_class = "members.auth.SignatureAuthentication"
    name = "httpMessageSignature"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Signature",
            "description": (
                "RFC 9421 HTTP Message Signature by your organisation's Ed25519 key:"
                ' Signature-Input covers "@method" "@target-uri" (and "content-digest" with a'
                ' body) with created, keyid, nonce, alg="ed25519", tag="hashx". The hashx client'
                " signs for you."
            ),
        }


class FeedTokenScheme(OpenApiAuthenticationExtension):
    target_class = "members.tokens.FeedTokenAuthentication"
    name = "feedToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": (
                "A read-only feed token (hxft_…, POST /api/v1/feed-tokens), on the feed"
                " endpoints only; also accepted as the password of HTTP Basic."
            ),
        }


class RefuseFeedTokensScheme(OpenApiAuthenticationExtension):
    """Refuses feed tokens where they are not accepted: no way in, so no security scheme."""

    target_class = "members.tokens.RefuseFeedTokens"
    name: list[str] = []

    def get_security_requirement(self, auto_schema: Any) -> list[Any]:
        return []

    def get_security_definition(self, auto_schema: Any) -> list[Any]:
        return []
