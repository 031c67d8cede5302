// The Teams user token exchange (getTokenForTeamsUser) with the official, unmodified JS SDK
// (@azure/communication-identity 1.3.1) against COMMUNICATION_SERVICES_CONNECTION_STRING, including
// the ways it is refused. TEAMS_USER_TOKENS (JSON, from the harness, which made them with the
// emulator's POST /admin/teamsUsers) holds Entra tokens of a test Teams user: "valid", "expired",
// "wrongAudience", and the "appId" and "userId" they were issued for.
//
// Same step protocol as quickstart.mjs: one JSON line per step, then (SDK_STEP_ACK=1) a line on
// stdin. The SDK is loaded from SDK_JS_DIR (default .cache/sdk/js).

import { createRequire } from "node:module";
import { createInterface } from "node:readline";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const jsDir = resolve(process.env.SDK_JS_DIR ?? join(here, "..", "..", ".cache", "sdk", "js"));
const require = createRequire(join(jsDir, "package.json"));
const { CommunicationIdentityClient } = require("@azure/communication-identity");

const ackLines = process.env.SDK_STEP_ACK === "1" ? createInterface({ input: process.stdin })[Symbol.asyncIterator]() : null;

async function emit(step, fields = {}) {
  process.stdout.write(JSON.stringify({ step, ...fields }) + "\n");
  if (ackLines && step !== "done" && step !== "failed") {
    const { done } = await ackLines.next();
    if (done) throw new Error(`stdin closed while waiting for the harness after step ${step}`);
  }
}

async function refused(step, call) {
  try {
    await call();
  } catch (e) {
    if (e?.name !== "RestError") throw e;
    await emit(step, { error: e.name, status: e.statusCode, code: e.code, message: e.message });
    return;
  }
  throw new Error(`${step}: the exchange succeeded`);
}

async function main() {
  const tokens = JSON.parse(process.env.TEAMS_USER_TOKENS);
  const { appId, userId } = tokens;
  const client = new CommunicationIdentityClient(process.env.COMMUNICATION_SERVICES_CONNECTION_STRING);
  const exchange = (teamsUserAadToken, clientId, userObjectId) =>
    client.getTokenForTeamsUser({ teamsUserAadToken, clientId, userObjectId });

  const result = await exchange(tokens.valid, appId, userId);
  if (!(typeof result.token === "string" && result.token.split(".").length === 3)) {
    throw new Error("exchange: the token is not a JWT");
  }
  if (!(result.expiresOn instanceof Date)) throw new Error("exchange: expiresOn is not a Date");
  await emit("exchange", { token: result.token, expiresOn: result.expiresOn.toISOString() });

  await refused("wrong_app_rejected", () => exchange(tokens.valid, `not-${appId}`, userId));
  await refused("wrong_user_rejected", () => exchange(tokens.valid, appId, `not-${userId}`));
  await refused("empty_app_rejected", () => exchange(tokens.valid, "", userId));
  await refused("expired_rejected", () => exchange(tokens.expired, appId, userId));
  await refused("wrong_audience_rejected", () => exchange(tokens.wrongAudience, appId, userId));
  await refused("invalid_token_rejected", () => exchange("invalid", appId, userId));
  await emit("done");
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.stdout.write(JSON.stringify({ step: "failed", error: String(e?.message ?? e) }) + "\n");
    process.exit(1);
  },
);
