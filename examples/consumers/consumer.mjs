// An application that signs in to ACS with the token acs-identity-operator keeps in a Secret,
// through the official SDK's AzureCommunicationTokenCredential (@azure/communication-common,
// which the chat, calling and rooms SDKs take).
//
// The Secret is mounted as a volume (never `subPath`: kubelet does not update subPath mounts).
// kubelet swaps the volume's `..data` link to a new directory in one step, so resolving it once
// and reading every file under it gives one Secret version. The credential calls
// `tokenRefresher` when its token is within 10 minutes of expiry; the refresher hands it the
// token the Secret holds, waiting for the next one if kubelet has not caught up with a renewal.
//
// Run: ACS_TOKEN_DIR=/var/run/secrets/acs node consumer.mjs
// Each token the credential hands out is logged as a JSON line with its hash, never the token.

import { AzureCommunicationTokenCredential } from "@azure/communication-common";
import { createHash } from "node:crypto";
import { readFileSync, realpathSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

const env = (name, fallback) => process.env[name] ?? fallback;
const TOKEN_DIR = env("ACS_TOKEN_DIR", "/var/run/secrets/acs");
const WAIT_MS = Number(env("ACS_TOKEN_WAIT_SECONDS", "180")) * 1000;
const MIN_LEFT_MS = Number(env("ACS_TOKEN_MIN_LEFT_SECONDS", "5")) * 1000;
const EVERY_MS = Number(env("ACS_CONSUMER_EVERY_SECONDS", "1")) * 1000;
const RUN_MS = Number(env("ACS_CONSUMER_RUN_SECONDS", "0")) * 1000;

/** The token and its expiry (ms since the epoch) from one version of the Secret. */
function readSecret() {
  for (let i = 0; i < 10; i++) {
    const data = realpathSync(join(TOKEN_DIR, "..data"));
    try {
      const token = readFileSync(join(data, "token"), "utf8").trim();
      const expiresOn = Date.parse(readFileSync(join(data, "expiresOn"), "utf8").trim());
      return { token, expiresOn };
    } catch (e) {
      // kubelet removed that version between resolving and reading: resolve again.
      if (e.code !== "ENOENT") throw e;
    }
  }
  throw new Error(`${TOKEN_DIR} keeps changing under the reader`);
}

/** The freshest token the Secret holds, waiting for a renewal if that one is expiring. */
async function refresh(abortSignal) {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const { token, expiresOn } = readSecret();
    if (expiresOn - Date.now() > MIN_LEFT_MS) return token;
    if (Date.now() > deadline) {
      throw new Error(
        `the token in ${TOKEN_DIR} expires at ${new Date(expiresOn).toISOString()} and no ` +
          `renewed one came within ${WAIT_MS / 1000}s: is the operator renewing it? ` +
          "(kubectl acs-identity status NAME)",
      );
    }
    if (abortSignal?.aborted) throw new Error("token refresh aborted");
    await sleep(500);
  }
}

const log = (fields) => console.log(JSON.stringify(fields));

const credential = new AzureCommunicationTokenCredential({
  token: await refresh(),
  tokenRefresher: refresh,
  refreshProactively: true,
});
const started = Date.now();
let last;
while (RUN_MS <= 0 || Date.now() - started < RUN_MS) {
  const access = await credential.getToken();
  const hash = createHash("sha256").update(access.token).digest("hex").slice(0, 16);
  const expiresOn = Math.floor(access.expiresOnTimestamp / 1000);
  log({ event: hash === last ? "same" : "token", hash, expiresOn, at: Date.now() / 1000 });
  last = hash;
  await sleep(EVERY_MS);
}
credential.dispose();
log({ event: "done" });
