// The Entra ID token exchanges of @azure/communication-common 2.5.0 (official, unmodified):
// AzureCommunicationTokenCredential built with Entra options, which uses its EntraTokenCredential
// to call POST /access/teamsExtension/:exchangeAccessToken (api-version 2025-06-30, for Teams
// extension scopes) or POST /access/entra/:exchangeAccessToken (2025-03-02-preview, for the
// default https://communication.azure.com/clients/.default scope) at ACS_RESOURCE_ENDPOINT.
//
// ENTRA_TOKENS (JSON, from the harness, which made them with the emulator's POST /admin/teamsUsers
// and assigned their users) holds Entra ID user tokens: "teamsExtension" (audience
// https://auth.msft.communication.azure.com), "clients" (https://communication.azure.com/clients)
// and "unassigned" (a clients token of a user without an assignment). The credential the SDK is
// given stands for the application's sign-in (InteractiveBrowserCredential and the like): it
// hands out one of those tokens and records the scopes the SDK asked for.
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
const { AzureCommunicationTokenCredential } = require("@azure/communication-common");

const ackLines = process.env.SDK_STEP_ACK === "1" ? createInterface({ input: process.stdin })[Symbol.asyncIterator]() : null;

async function emit(step, fields = {}) {
  process.stdout.write(JSON.stringify({ step, ...fields }) + "\n");
  if (ackLines && step !== "done" && step !== "failed") {
    const { done } = await ackLines.next();
    if (done) throw new Error(`stdin closed while waiting for the harness after step ${step}`);
  }
}

/** A TokenCredential that hands out `token` (an hour from now) and records the scopes asked. */
function signedIn(token, asked) {
  return {
    async getToken(scopes) {
      asked.push(...[].concat(scopes));
      return { token, expiresOnTimestamp: Date.now() + 3600 * 1000 };
    },
  };
}

/** Exchanges through the SDK twice: the second call must be served from its cache. */
async function exchange(step, entraToken, scopes) {
  const asked = [];
  const credential = new AzureCommunicationTokenCredential({
    resourceEndpoint: process.env.ACS_RESOURCE_ENDPOINT,
    tokenCredential: signedIn(entraToken, asked),
    ...(scopes ? { scopes } : {}),
  });
  const first = await credential.getToken();
  const again = await credential.getToken();
  if (!(typeof first.token === "string" && first.token.split(".").length === 3)) {
    throw new Error(`${step}: the token is not a JWT`);
  }
  if (again.token !== first.token) throw new Error(`${step}: the second getToken exchanged again`);
  credential.dispose();
  await emit(step, { token: first.token, expiresOnTimestamp: first.expiresOnTimestamp, scopes: [...new Set(asked)] });
}

async function main() {
  const tokens = JSON.parse(process.env.ENTRA_TOKENS);
  await exchange("teams_extension", tokens.teamsExtension, [
    "https://auth.msft.communication.azure.com/TeamsExtension.ManageCalls",
  ]);
  await exchange("entra", tokens.clients, undefined);
  try {
    const credential = new AzureCommunicationTokenCredential({
      resourceEndpoint: process.env.ACS_RESOURCE_ENDPOINT,
      tokenCredential: signedIn(tokens.unassigned, []),
    });
    await credential.getToken();
    throw new Error("unassigned: the exchange succeeded");
  } catch (e) {
    if (String(e?.message).startsWith("unassigned:")) throw e;
    await emit("unassigned_rejected", { message: String(e?.message ?? e) });
  }
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
