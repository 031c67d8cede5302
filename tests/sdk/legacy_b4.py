"""The 2020 edition of the ACS "user access tokens" quickstart, run with the first Python library,
azure-communication-administration 1.0.0b4 (api-version 2020-07-20-preview2), official and
unmodified, against COMMUNICATION_SERVICES_CONNECTION_STRING (crates/acs-emulator/tests/sdk_compat.rs points it at
the acs-emulator over TLS).

Same protocol as quickstart.py: one JSON line per step on stdout ({"step": ...}); with
SDK_STEP_ACK=1 the script then waits for a line on stdin, so the harness checks the emulator's
admin view after every step. The last line on success is {"step": "done"}.
"""

import json
import os
import sys
import traceback
from datetime import datetime, timedelta, timezone

from azure.communication.administration import CommunicationIdentityClient
from azure.core.exceptions import HttpResponseError

STEP_ACK = os.environ.get("SDK_STEP_ACK") == "1"


def emit(step, **fields):
    print(json.dumps({"step": step, **fields}), flush=True)
    if STEP_ACK and step not in ("done", "failed"):
        if not sys.stdin.readline():
            raise SystemExit(f"stdin closed while waiting for the harness after step {step}")


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def token_fields(step, result, user_id):
    check(result.id == user_id, f"{step}: token for {result.id!r}, expected {user_id!r}")
    check(isinstance(result.token, str) and result.token.count(".") == 2, f"{step}: not a JWT")
    expires_on = result.expires_on
    check(isinstance(expires_on, datetime) and expires_on.tzinfo is not None, f"{step}: expires_on {expires_on!r}")
    remaining = expires_on - datetime.now(timezone.utc)
    check(timedelta(hours=23) < remaining <= timedelta(hours=24, minutes=2), f"{step}: expires in {remaining}")
    return {"token": result.token, "expiresOn": expires_on.isoformat()}


def main():
    client = CommunicationIdentityClient.from_connection_string(
        os.environ["COMMUNICATION_SERVICES_CONNECTION_STRING"]
    )

    user = client.create_user()
    user_id = user.identifier
    check(isinstance(user_id, str) and user_id.startswith("8:acs:"), f"create_user: id {user_id!r}")
    emit("create_user", id=user_id)

    first = client.issue_token(user, scopes=["chat"])
    emit("issue_token", id=user_id, **token_fields("issue_token", first, user_id))

    client.revoke_tokens(user)
    emit("revoke_tokens", id=user_id)

    second = client.issue_token(user, scopes=["chat", "voip"])
    emit("issue_token_after_revoke", id=user_id, **token_fields("issue_token_after_revoke", second, user_id))

    # Revoking what was issued before an hour ago leaves the token just issued valid.
    client.revoke_tokens(user, issued_before=datetime.now(timezone.utc) - timedelta(hours=1))
    emit("revoke_tokens_issued_before_an_hour_ago", id=user_id)

    # Revoking what was issued before a minute from now covers it.
    client.revoke_tokens(user, issued_before=datetime.now(timezone.utc) + timedelta(minutes=1))
    emit("revoke_tokens_issued_before_a_minute_from_now", id=user_id)

    client.delete_user(user)
    emit("delete_user", id=user_id)

    try:
        client.issue_token(user, scopes=["chat"])
    except HttpResponseError as e:
        check(e.status_code == 404, f"issue_token_deleted: status {e.status_code}")
        emit("issue_token_deleted_rejected", id=user_id, status=e.status_code)
    else:
        raise AssertionError("issue_token_deleted: succeeded")

    emit("done")


if __name__ == "__main__":
    try:
        main()
    except BaseException as e:  # report any failure as a step, then exit non-zero
        traceback.print_exc()
        print(json.dumps({"step": "failed", "error": f"{type(e).__name__}: {e}"}), flush=True)
        sys.exit(1)
