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
