"""Schemathesis hooks for scripts/fuzz-api.sh."""

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
