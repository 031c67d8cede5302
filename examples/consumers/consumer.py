"""An application that signs in to ACS with the token acs-identity-operator keeps in a Secret.

The Secret is mounted as a volume (a whole directory, never `subPath`: kubelet does not update
subPath mounts). kubelet updates such a volume by writing the new files into a fresh hidden
directory and then swapping the `..data` link to it in one step, so a reader that resolves
`..data` once and reads every file under it sees one Secret version, never half of two.

The official SDK's CommunicationTokenCredential calls `token_refresher` when its token is close to
expiry (10 minutes with proactive refresh). The refresher below hands it the token the Secret
holds now, and if that one is itself about to expire (kubelet has not caught up with a renewal
yet), waits for the next one instead of handing over a token that would fail.

Run: ACS_TOKEN_DIR=/var/run/secrets/acs python consumer.py
Each token the credential hands out is logged as a JSON line with its hash, never the token.
"""

import hashlib
import json
import os
import sys
import time
from datetime import datetime

from azure.communication.chat import CommunicationTokenCredential
from azure.core.credentials import AccessToken

TOKEN_DIR = os.environ.get("ACS_TOKEN_DIR", "/var/run/secrets/acs")
# How long the refresher waits for a renewed token before giving up (kubelet's update delay is
# up to its sync period plus its cache TTL, a minute or two by default).
WAIT_SECONDS = float(os.environ.get("ACS_TOKEN_WAIT_SECONDS", "180"))
# A token with less than this left is not handed out.
MIN_LEFT_SECONDS = float(os.environ.get("ACS_TOKEN_MIN_LEFT_SECONDS", "5"))
# How often the demo loop asks the credential, and for how long (0: forever).
EVERY_SECONDS = float(os.environ.get("ACS_CONSUMER_EVERY_SECONDS", "1"))
RUN_SECONDS = float(os.environ.get("ACS_CONSUMER_RUN_SECONDS", "0"))


def read_secret():
    """The token and its expiry (seconds since the epoch) from one version of the Secret."""
    for _ in range(10):
        data = os.path.realpath(os.path.join(TOKEN_DIR, "..data"))
        try:
            with open(os.path.join(data, "token"), encoding="utf-8") as f:
                token = f.read().strip()
            with open(os.path.join(data, "expiresOn"), encoding="utf-8") as f:
                expires_on = f.read().strip()
        except FileNotFoundError:
            # kubelet removed that version between resolving and reading: resolve again.
            continue
        expires = datetime.fromisoformat(expires_on.replace("Z", "+00:00")).timestamp()
        return token, int(expires)
    raise RuntimeError(f"{TOKEN_DIR} keeps changing under the reader")


def refresh():
    """The freshest token the Secret holds, waiting for a renewal if that one is expiring."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        token, expires = read_secret()
        if expires - time.time() > MIN_LEFT_SECONDS:
            return AccessToken(token, expires)
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"the token in {TOKEN_DIR} expires at {expires} and no renewed one came within "
                f"{WAIT_SECONDS:.0f}s: is the operator renewing it? "
                "(kubectl acs-identity status NAME)"
            )
        time.sleep(0.5)


def log(**fields):
    print(json.dumps(fields), flush=True)


def main():
    token, _ = refresh()
    started = time.monotonic()
    last = None
    with CommunicationTokenCredential(
        token, token_refresher=refresh, proactive_refresh=True
    ) as credential:
        while RUN_SECONDS <= 0 or time.monotonic() - started < RUN_SECONDS:
            access = credential.get_token()
            digest = hashlib.sha256(access.token.encode()).hexdigest()[:16]
            if digest != last:
                log(event="token", hash=digest, expiresOn=access.expires_on, at=time.time())
                last = digest
            else:
                log(event="same", hash=digest, expiresOn=access.expires_on, at=time.time())
            time.sleep(EVERY_SECONDS)
    log(event="done")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)
