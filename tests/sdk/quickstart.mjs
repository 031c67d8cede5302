// The ACS "create and manage access tokens" quickstart, run with the official, unmodified JS SDK
// (@azure/communication-identity 1.3.1) against whatever COMMUNICATION_SERVICES_CONNECTION_STRING
// points at (crates/acs-emulator/tests/sdk_compat.rs points it at the acs-emulator over TLS, NODE_EXTRA_CA_CERTS).
//
// Every step prints one JSON line on stdout ({"step": ..., ...}) so the Rust harness can
// cross-check the emulator's admin view; diagnostics go to stderr. Any unexpected SDK behaviour
// throws, which exits non-zero after printing {"step":"failed",...}. Success ends with {"step":"done"}.
//
// Identities used (same plan as quickstart.py):
//   A  createUser; getToken voip; refreshed from its id alone; custom expiry 60 min; 59 min
//      rejected; revokeTokens; a token issued after the revoke.
//   B  createUserAndToken voip: never revoked nor deleted, its token stays valid.
//   C  createUserAndToken with 60 min expiry; deleteUser; getToken afterwards is a 404.
// Finally a client built with a wrong access key is refused (RestError, statusCode 401).
//
// The SDK is installed by tests/sdk/setup.sh into .cache/sdk/js/node_modules (not next to this
// file), so it is loaded with a require rooted there; SDK_JS_DIR overrides that directory.

import { createRequire } from "node:module";
import { createInterface } from "node:readline";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const jsDir = resolve(process.env.SDK_JS_DIR ?? join(here, "..", "..", ".cache", "sdk", "js"));
const require = createRequire(join(jsDir, "package.json"));
const { CommunicationIdentityClient } = require("@azure/communication-identity");
const { AzureCommunicationTokenCredential } = require("@azure/communication-common");

const MINUTE_MS = 60 * 1000;
const DEFAULT_LIFETIME_MS = 1440 * MINUTE_MS;
const ONE_HOUR_MS = 60 * MINUTE_MS;
const SLACK_MS = 90 * 1000;
const LIFETIME_OVERRIDE = process.env.EXPECT_TOKEN_LIFETIME_SECONDS;

// SDK_STEP_ACK=1: after each step, wait for one line on stdin (the harness's go-ahead), so the
// harness checks the emulator's state before the next step.
const ackLines = process.env.SDK_STEP_ACK === "1" ? createInterface({ input: process.stdin })[Symbol.asyncIterator]() : null;

async function emit(step, fields = {}) {
  process.stdout.write(JSON.stringify({ step, ...fields }) + "\n");
  if (ackLines && step !== "done" && step !== "failed") {
    const { done } = await ackLines.next();
    if (done) throw new Error(`stdin closed while waiting for the harness after step ${step}`);
  }
}

function check(cond, what) {
  if (!cond) throw new Error(what);
}

async function checkToken(step, { token, expiresOn }, lifetimeMs) {
  check(typeof token === "string" && token.split(".").length === 3, `${step}: token is not header.payload.signature`);
  check(expiresOn instanceof Date && !Number.isNaN(expiresOn.getTime()), `${step}: expiresOn is not a Date`);
  const expected = LIFETIME_OVERRIDE ? Number(LIFETIME_OVERRIDE) * 1000 : lifetimeMs;
  const remaining = expiresOn.getTime() - Date.now();
  check(
    Math.abs(remaining - expected) <= SLACK_MS,
    `${step}: expiresOn ${expiresOn.toISOString()} is ${remaining} ms from now, expected about ${expected} ms`,
  );
  // The SDK's own client-side credential decodes the JWT (jwt-decode, `exp` claim); the emulator
  // promises that `exp` equals the expiresOn it returned.
  const credential = new AzureCommunicationTokenCredential(token);
  try {
    const parsed = await credential.getToken();
    check(parsed.token === token, `${step}: the credential returned another token`);
    check(
      parsed.expiresOnTimestamp === Math.floor(expiresOn.getTime() / 1000) * 1000,
      `${step}: the token's exp (${parsed.expiresOnTimestamp / 1000}) differs from expiresOn (${expiresOn.toISOString()})`,
    );
    return { token, expiresOn: expiresOn.toISOString(), exp: parsed.expiresOnTimestamp / 1000 };
  } finally {
    credential.dispose();
  }
}

function checkUser(step, user) {
  const id = user?.communicationUserId;
  check(typeof id === "string" && id.startsWith("8:acs:"), `${step}: unexpected id ${JSON.stringify(id)}`);
  return id;
}

async function expectRestError(step, statusCode, code, call) {
  try {
    await call();
  } catch (e) {
    check(e?.name === "RestError", `${step}: threw ${e?.name}: ${e?.message}, expected RestError`);
    check(e.statusCode === statusCode, `${step}: statusCode ${e.statusCode}, expected ${statusCode}`);
    check(code === undefined || e.code === code, `${step}: code ${JSON.stringify(e.code)}, expected ${code}`);
    return { error: e.name, status: e.statusCode, code: e.code ?? null, message: e.message };
  }
  throw new Error(`${step}: succeeded, expected RestError ${statusCode}`);
}

async function main() {
  const connectionString = process.env.COMMUNICATION_SERVICES_CONNECTION_STRING;
  check(connectionString, "COMMUNICATION_SERVICES_CONNECTION_STRING is not set");
  const identityClient = new CommunicationIdentityClient(connectionString);

  // Quickstart: create an identity.
  const identityResponse = await identityClient.createUser();
  const idA = checkUser("create_user", identityResponse);
  await emit("create_user", { id: idA });

  // Quickstart: issue an access token with the voip scope.
  let tokenResponse = await identityClient.getToken(identityResponse, ["voip"]);
  await emit("get_token", { id: idA, scopes: ["voip"], ...(await checkToken("get_token", tokenResponse, DEFAULT_LIFETIME_MS)) });

  // Quickstart: refresh an access token for an existing identity known only by its id.
  const existing = { communicationUserId: idA };
  tokenResponse = await identityClient.getToken(existing, ["voip"]);
  await emit("refresh_token", { id: idA, scopes: ["voip"], ...(await checkToken("refresh_token", tokenResponse, DEFAULT_LIFETIME_MS)) });

  // Quickstart: create an identity and issue a token in one request.
  const userAndToken = await identityClient.createUserAndToken(["voip"]);
  const idB = checkUser("create_user_and_token", userAndToken.user);
  await emit("create_user_and_token", {
    id: idB,
    scopes: ["voip"],
    ...(await checkToken("create_user_and_token", userAndToken, DEFAULT_LIFETIME_MS)),
  });

  // Quickstart: custom token expiration, 60 minutes (the minimum) on both operations.
  tokenResponse = await identityClient.getToken(identityResponse, ["voip"], { tokenExpiresInMinutes: 60 });
  await emit("get_token_60min", { id: idA, scopes: ["voip"], ...(await checkToken("get_token_60min", tokenResponse, ONE_HOUR_MS)) });

  const userC = await identityClient.createUserAndToken(["chat", "voip"], { tokenExpiresInMinutes: 60 });
  const idC = checkUser("create_user_and_token_60min", userC.user);
  await emit("create_user_and_token_60min", {
    id: idC,
    scopes: ["chat", "voip"],
    ...(await checkToken("create_user_and_token_60min", userC, ONE_HOUR_MS)),
  });

  // 59 minutes is below the service's minimum: RestError 400 ValidationError.
  await emit("get_token_59min_rejected", {
    id: idA,
    ...(await expectRestError("get_token_59min_rejected", 400, "ValidationError", () =>
      identityClient.getToken(identityResponse, ["voip"], { tokenExpiresInMinutes: 59 }),
    )),
  });
  await emit(
    "create_user_and_token_59min_rejected",
    await expectRestError("create_user_and_token_59min_rejected", 400, "ValidationError", () =>
      identityClient.createUserAndToken(["voip"], { tokenExpiresInMinutes: 59 }),
    ),
  );

  // Quickstart: revoke every token of A; a token issued afterwards is valid again.
  await identityClient.revokeTokens(identityResponse);
  await emit("revoke_tokens", { id: idA });
  tokenResponse = await identityClient.getToken(identityResponse, ["chat"]);
  await emit("get_token_after_revoke", {
    id: idA,
    scopes: ["chat"],
    ...(await checkToken("get_token_after_revoke", tokenResponse, DEFAULT_LIFETIME_MS)),
  });

  // Quickstart: delete an identity; it is gone afterwards.
  await identityClient.deleteUser(userC.user);
  await emit("delete_user", { id: idC });
  await emit("get_token_deleted_user_rejected", {
    id: idC,
    ...(await expectRestError("get_token_deleted_user_rejected", 404, undefined, () =>
      identityClient.getToken(userC.user, ["voip"]),
    )),
  });

  // A client with the right endpoint but a wrong access key is refused.
  const endpoint = /endpoint=(.*?);/i.exec(connectionString + ";")[1];
  const wrongKey = Buffer.from("definitely-not-the-emulator-key-0123456789").toString("base64");
  const wrongClient = new CommunicationIdentityClient(`endpoint=${endpoint};accesskey=${wrongKey}`);
  await emit("wrong_key_rejected", await expectRestError("wrong_key_rejected", 401, undefined, () => wrongClient.createUser()));

  await emit("done");
}

main().then(
  // stdin may still be open (SDK_STEP_ACK): exit instead of waiting for it.
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.stdout.write(JSON.stringify({ step: "failed", error: e?.name ?? "Error", message: String(e?.message ?? e) }) + "\n");
    process.exit(1);
  },
);
