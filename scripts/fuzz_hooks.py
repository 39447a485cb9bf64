"""Schemathesis hooks for scripts/fuzz-api.sh."""

import os
import re

import schemathesis

# The spec's If-Match pattern (src/server/params.rs).
IF_MATCH = re.compile(r'(W/)?"[0-9]{1,19}"|[0-9]{1,19}')


@schemathesis.hook
def before_call(context, case, **kwargs):
    # A write takes one condition: If-Match and If-None-Match together are a 400, a rule between
    # two parameters that OpenAPI cannot declare (tests/app/api.rs checks that 400). When a generated
    # case has both, drop one that is valid, so the case stays as valid or invalid as it was.
    headers = case.headers
    if not headers or "If-Match" not in headers or "If-None-Match" not in headers:
        return
    if_match_ok = IF_MATCH.fullmatch(str(headers["If-Match"])) is not None
    if_none_match_ok = headers["If-None-Match"] == "*"
    if if_none_match_ok:
        del headers["If-None-Match"]
    elif if_match_ok:
        del headers["If-Match"]


# scripts/fuzz-api.sh runs Schemathesis twice against a server with authentication on: once
# sending a valid token (KVQ_FUZZ_AUTH=token), once without (KVQ_FUZZ_AUTH=none).
AUTH_RUN = os.environ.get("KVQ_FUZZ_AUTH", "")
TOKEN = os.environ.get("KVQ_FUZZ_TOKEN", "")


@schemathesis.check
def authentication_answers(ctx, response, case):
    """Without a token every answer is 401 with `WWW-Authenticate: Bearer`; with the valid token
    none is (its token has every scope and no prefix limit)."""
    challenge = (response.headers.get("www-authenticate") or [""])[0]
    if AUTH_RUN == "none":
        if response.status_code != 401 or not challenge.startswith("Bearer "):
            raise AssertionError(
                f"without a token the server answered {response.status_code} "
                f"(WWW-Authenticate {challenge!r}); every /v1 answer must be 401 with a Bearer challenge"
            )
    elif AUTH_RUN == "token":
        sent = response.request.headers.get("Authorization", "")
        if TOKEN and sent == f"Bearer {TOKEN}" and response.status_code in (401, 403):
            raise AssertionError(f"the valid token was refused with {response.status_code}")
    return None
