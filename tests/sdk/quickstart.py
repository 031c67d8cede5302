"""The ACS "create and manage access tokens" quickstart, run with the official, unmodified Python SDK
(azure-communication-identity 1.5.0) against whatever COMMUNICATION_SERVICES_CONNECTION_STRING
points at (crates/acs-emulator/tests/sdk_compat.rs points it at the acs-emulator over TLS).

Every step prints one JSON line on stdout ({"step": ..., ...}) so the Rust harness can cross-check
the emulator's admin view (with SDK_STEP_ACK=1 the script then waits for a line on stdin, so the
check happens before the next step); diagnostics go to stderr. Any unexpected SDK behaviour raises, which
exits non-zero after printing {"step": "failed", ...}. The last line on success is {"step": "done"}.

Identities used:
  A  create_user; get_token voip; refreshed through CommunicationUserIdentifier(id); custom
     expiry 60 min; 59 min rejected; revoke_tokens; a token issued after the revoke.
  B  create_user_and_token voip: never revoked nor deleted, its token stays valid.
  C  create_user_and_token with 60 min expiry; delete_user; get_token afterwards is a 404.
Finally a client built with a wrong access key is refused (ClientAuthenticationError, 401).
"""

import base64
import json
import os
import sys
import traceback
from datetime import datetime, timedelta, timezone

from azure.communication.identity import (
    CommunicationIdentityClient,
    CommunicationTokenScope,
    CommunicationUserIdentifier,
)
from azure.communication.identity._shared.user_credential import CommunicationTokenCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
)

# A full day, as the service issues by default, and the two custom expiries the quickstart uses.
DEFAULT_LIFETIME = timedelta(hours=24)
ONE_HOUR = timedelta(minutes=60)
TOO_SHORT = timedelta(minutes=59)
# Slack for comparing an expiresOn with now + lifetime (clock reads on both sides, rounding).
SLACK = timedelta(seconds=90)
# When the emulator overrides every lifetime (--token-lifetime-seconds) the harness says so.
LIFETIME_OVERRIDE = os.environ.get("EXPECT_TOKEN_LIFETIME_SECONDS")
# SDK_STEP_ACK=1: after each step, wait for one line on stdin (the harness's go-ahead).
STEP_ACK = os.environ.get("SDK_STEP_ACK") == "1"


def emit(step, **fields):
    print(json.dumps({"step": step, **fields}), flush=True)
    # Under the harness, wait until it has checked the emulator's state after this step.
    if STEP_ACK and step not in ("done", "failed"):
        if not sys.stdin.readline():
            raise SystemExit(f"stdin closed while waiting for the harness after step {step}")


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def iso(dt):
    return dt.astimezone(timezone.utc).isoformat()


def check_token(step, access_token, lifetime):
    """A token is JWT-shaped and its expiry is now + lifetime (or the emulator's override)."""
    token, raw_expires_on = access_token.token, access_token.expires_on
    check(isinstance(token, str) and token.count(".") == 2, f"{step}: token is not header.payload.signature")
    # SDK 1.5.0 hands expires_on back as the service's ISO-8601 string (the quickstart prints it).
    check(isinstance(raw_expires_on, str), f"{step}: expires_on is not a string: {raw_expires_on!r}")
    expires_on = datetime.fromisoformat(raw_expires_on)
    check(expires_on.tzinfo is not None, f"{step}: expires_on has no UTC offset: {raw_expires_on!r}")
    expected = timedelta(seconds=int(LIFETIME_OVERRIDE)) if LIFETIME_OVERRIDE else lifetime
    remaining = expires_on - datetime.now(timezone.utc)
    check(
        expected - SLACK <= remaining <= expected + SLACK,
        f"{step}: expires_on {iso(expires_on)} is {remaining} from now, expected about {expected}",
    )
    # The SDK's own client-side credential parses the JWT (base64 payload, `exp` claim); the
    # emulator promises that `exp` equals the expiresOn it returned.
    parsed = CommunicationTokenCredential(token).get_token()
    check(
        parsed.expires_on == int(expires_on.timestamp()),
        f"{step}: the token's exp ({parsed.expires_on}) differs from expiresOn ({iso(expires_on)})",
    )
    return {"token": token, "expiresOn": raw_expires_on, "exp": parsed.expires_on}


def check_user(step, user):
    check(isinstance(user, CommunicationUserIdentifier), f"{step}: not a CommunicationUserIdentifier: {user!r}")
    user_id = user.properties["id"]
    check(isinstance(user_id, str) and user_id.startswith("8:acs:"), f"{step}: unexpected id {user_id!r}")
    check(user.raw_id == user_id, f"{step}: raw_id {user.raw_id!r} differs from id {user_id!r}")
    return user_id


def expect_error(step, exc_type, status, code, call):
    try:
        call()
    except exc_type as e:
        check(e.status_code == status, f"{step}: status {e.status_code}, expected {status}")
        got_code = e.error.code if e.error is not None else None
        check(code is None or got_code == code, f"{step}: error code {got_code!r}, expected {code!r}")
        message = e.error.message if e.error is not None else None
        return {"error": type(e).__name__, "status": e.status_code, "code": got_code, "message": message}
    raise AssertionError(f"{step}: succeeded, expected {exc_type.__name__} {status}")


def main():
    connection_string = os.environ["COMMUNICATION_SERVICES_CONNECTION_STRING"]
    client = CommunicationIdentityClient.from_connection_string(connection_string)

    # Quickstart: create an identity.
    identity = client.create_user()
    id_a = check_user("create_user", identity)
    emit("create_user", id=id_a)

    # Quickstart: issue an access token with the voip scope.
    token_result = client.get_token(identity, [CommunicationTokenScope.VOIP])
    emit("get_token", id=id_a, scopes=["voip"], **check_token("get_token", token_result, DEFAULT_LIFETIME))

    # Quickstart: refresh an access token for an existing identity known only by its id.
    existing = CommunicationUserIdentifier(id_a)
    token_result = client.get_token(existing, ["voip"])
    emit("refresh_token", id=id_a, scopes=["voip"], **check_token("refresh_token", token_result, DEFAULT_LIFETIME))

    # Quickstart: create an identity and issue a token in one request.
    identity_b, token_result = client.create_user_and_token(scopes=[CommunicationTokenScope.VOIP])
    id_b = check_user("create_user_and_token", identity_b)
    emit(
        "create_user_and_token",
        id=id_b,
        scopes=["voip"],
        **check_token("create_user_and_token", token_result, DEFAULT_LIFETIME),
    )

    # Quickstart: custom token expiration, 60 minutes (the minimum) on both operations.
    token_result = client.get_token(identity, ["voip"], token_expires_in=ONE_HOUR)
    emit("get_token_60min", id=id_a, scopes=["voip"], **check_token("get_token_60min", token_result, ONE_HOUR))

    identity_c, token_result = client.create_user_and_token(["chat", "voip"], token_expires_in=ONE_HOUR)
    id_c = check_user("create_user_and_token_60min", identity_c)
    emit(
        "create_user_and_token_60min",
        id=id_c,
        scopes=["chat", "voip"],
        **check_token("create_user_and_token_60min", token_result, ONE_HOUR),
    )

    # 59 minutes is below the service's minimum: HttpResponseError 400 ValidationError.
    emit(
        "get_token_59min_rejected",
        id=id_a,
        **expect_error(
            "get_token_59min_rejected",
            HttpResponseError,
            400,
            "ValidationError",
            lambda: client.get_token(identity, ["voip"], token_expires_in=TOO_SHORT),
        ),
    )
    emit(
        "create_user_and_token_59min_rejected",
        **expect_error(
            "create_user_and_token_59min_rejected",
            HttpResponseError,
            400,
            "ValidationError",
            lambda: client.create_user_and_token(["voip"], token_expires_in=TOO_SHORT),
        ),
    )

    # Quickstart: revoke every token of A; a token issued afterwards is valid again.
    client.revoke_tokens(identity)
    emit("revoke_tokens", id=id_a)
    token_result = client.get_token(identity, ["chat"])
    emit("get_token_after_revoke", id=id_a, scopes=["chat"], **check_token("get_token_after_revoke", token_result, DEFAULT_LIFETIME))

    # Quickstart: delete an identity; it is gone afterwards.
    client.delete_user(identity_c)
    emit("delete_user", id=id_c)
    emit(
        "get_token_deleted_user_rejected",
        id=id_c,
        **expect_error(
            "get_token_deleted_user_rejected",
            ResourceNotFoundError,
            404,
            None,
            lambda: client.get_token(identity_c, ["voip"]),
        ),
    )

    # A client with the right endpoint but a wrong access key is refused.
    endpoint = next(
        part.split("=", 1)[1]
        for part in connection_string.split(";")
        if part.split("=", 1)[0].strip().lower() == "endpoint"
    )
    wrong_key = base64.b64encode(b"definitely-not-the-emulator-key-0123456789").decode()
    wrong_client = CommunicationIdentityClient.from_connection_string(f"endpoint={endpoint};accesskey={wrong_key}")
    emit(
        "wrong_key_rejected",
        **expect_error("wrong_key_rejected", ClientAuthenticationError, 401, None, wrong_client.create_user),
    )

    emit("done")


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # report, then fail the run
        traceback.print_exc()
        emit("failed", error=type(e).__name__, message=str(e))
        sys.exit(1)
