"""The Teams user token exchange (get_token_for_teams_user) with the official, unmodified Python SDK
(azure-communication-identity 1.5.0) against COMMUNICATION_SERVICES_CONNECTION_STRING, including
the ways it is refused. TEAMS_USER_TOKENS (JSON, from the harness, which made them with the
emulator's POST /admin/teamsUsers) holds Entra tokens of a test Teams user: "valid", "expired",
"wrongAudience", and the "appId" and "userId" they were issued for.

Same step protocol as quickstart.py: one JSON line per step, then (SDK_STEP_ACK=1) a line on stdin.
"""

import json
import os
import sys
import traceback

from azure.communication.identity import CommunicationIdentityClient
from azure.core.exceptions import HttpResponseError

STEP_ACK = os.environ.get("SDK_STEP_ACK") == "1"


def emit(step, **fields):
    print(json.dumps({"step": step, **fields}), flush=True)
    if STEP_ACK and step not in ("done", "failed"):
        if not sys.stdin.readline():
            raise SystemExit(f"stdin closed while waiting for the harness after step {step}")


def refused(step, call):
    try:
        call()
    except HttpResponseError as e:
        code = e.error.code if e.error is not None else None
        message = e.error.message if e.error is not None else None
        emit(step, error=type(e).__name__, status=e.status_code, code=code, message=message)
        return
    raise AssertionError(f"{step}: the exchange succeeded")


def main():
    tokens = json.loads(os.environ["TEAMS_USER_TOKENS"])
    app_id, user_id = tokens["appId"], tokens["userId"]
    client = CommunicationIdentityClient.from_connection_string(
        os.environ["COMMUNICATION_SERVICES_CONNECTION_STRING"]
    )
    exchange = client.get_token_for_teams_user

    result = exchange(tokens["valid"], app_id, user_id)
    if not (isinstance(result.token, str) and result.token.count(".") == 2):
        raise AssertionError("exchange: the token is not a JWT")
    emit("exchange", token=result.token, expiresOn=str(result.expires_on))

    refused("wrong_app_rejected", lambda: exchange(tokens["valid"], "not-" + app_id, user_id))
    refused("wrong_user_rejected", lambda: exchange(tokens["valid"], app_id, "not-" + user_id))
    refused("empty_app_rejected", lambda: exchange(tokens["valid"], "", user_id))
    refused("expired_rejected", lambda: exchange(tokens["expired"], app_id, user_id))
    refused("wrong_audience_rejected", lambda: exchange(tokens["wrongAudience"], app_id, user_id))
    refused("invalid_token_rejected", lambda: exchange("invalid", app_id, user_id))
    emit("done")


if __name__ == "__main__":
    try:
        main()
    except BaseException as e:
        traceback.print_exc()
        print(json.dumps({"step": "failed", "error": f"{type(e).__name__}: {e}"}), flush=True)
        sys.exit(1)
