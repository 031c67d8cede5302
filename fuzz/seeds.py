#!/usr/bin/env python3
"""Writes the hand-made seed files of fuzz/corpus/<target>/ (seed-*). Files the fuzzer found
and that were kept (regression-*, or libFuzzer's hash names) are left alone.

Run from anywhere: python3 fuzz/seeds.py. The key and secret match crates/acs-emulator/src/fuzzing.rs."""
import base64, hashlib, hmac, json, os, pathlib

ROOT = pathlib.Path(__file__).resolve().parent / "corpus"
KEY = base64.b64decode("ZW11bGF0b3ItdGVzdC1rZXktMDEyMzQ1Njc4OWFiY2RlZg==")
TOKEN_SECRET = bytes([7] * 32)
DATE = "Wed, 18 Nov 2026 11:06:40 GMT"  # 1_795_000_000 s, the fuzz entries' clock


def b64(data):
    return base64.b64encode(data).decode()


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed_request(method, target, body, host="localhost:8080", order=("x-ms-date", "host", "x-ms-content-sha256"), date_header="x-ms-date"):
    content = b64(hashlib.sha256(body).digest())
    values = {"x-ms-date": DATE, "date": DATE, "host": host, "x-ms-content-sha256": content}
    to_sign = f"{method}\n{target}\n" + ";".join(values[h] for h in order)
    sig = b64(hmac.new(KEY, to_sign.encode(), hashlib.sha256).digest())
    head = [method, target, f"{date_header}: {DATE}", f"host: {host}", f"x-ms-content-sha256: {content}",
            f"authorization: HMAC-SHA256 SignedHeaders={';'.join(order)}&Signature={sig}"]
    return "\n".join(head).encode() + b"\n\n" + body


def token(claims):
    header = b64url(b'{"alg":"HS256","kid":"acs-emulator","typ":"JWT"}')
    payload = b64url(json.dumps(claims, separators=(",", ":")).encode())
    sig = b64url(hmac.new(TOKEN_SECRET, f"{header}.{payload}".encode(), hashlib.sha256).digest())
    return f"{header}.{payload}.{sig}"


CLAIMS = {"skypeid": "acs:r_u1", "scp": 1792, "csi": "1795000000", "iat": 1795000000, "exp": 1795086400,
          "acsScope": "chat,voip", "resourceId": "r", "jti": "j1", "seq": 1}
KEY_TEXT = "ZW11bGF0b3ItdGVzdC1rZXktMDEyMzQ1Njc4OWFiY2RlZg=="
TARGET = "/identities/8%3Aacs%3Ar_u1/:issueAccessToken?api-version=2023-10-01"

SEEDS = {
    "connection_string": [
        f"endpoint=https://res.communication.azure.com/;accesskey={KEY_TEXT}",
        f"AccessKey={KEY_TEXT};Endpoint=http://127.0.0.1:8080",
        f" endpoint = https://[::1]:8443/ ; accesskey = {KEY_TEXT} ; ",
        f"endpoint=https://res.example/path?q=1;accesskey={KEY_TEXT}",
        f"endpoint=ftp://res.example;accesskey={KEY_TEXT}",
        "endpoint=https://res.example;accesskey=not base64!!",
        "endpoint=https://res.example;accesskey=",
        f"endpoint=https://a;endpoint=https://b;accesskey={KEY_TEXT}",
        "accesskey=ZZZZZZZZZZZZZZZZZZZZ;endpoint",
        "",
        ";;;",
        f"endpoint=https://user:pw@res.example;accesskey={KEY_TEXT}",
        f"endpoint=https://res.example:99999;accesskey={KEY_TEXT}",
    ],
    "acs_response": [
        b"\x00" + json.dumps({"identity": {"id": "8:acs:r_u1"}}).encode(),
        b"\x00" + json.dumps({"identity": {"id": "8:acs:r_u1", "customId": "c", "lastTokenIssuedAt": "2026-11-19T08:53:20Z"},
                               "accessToken": {"token": "t", "expiresOn": "2026-11-20T08:53:20.123+00:00"}}).encode(),
        b"\x00" + json.dumps({"identity": {"id": ""}}).encode(),
        b"\x00{\"identity\":",
        b"\x01" + json.dumps({"token": "t", "expiresOn": "2023-06-28T07:30:12.7039383+00:00"}).encode(),
        b"\x01" + json.dumps({"token": 5, "expiresOn": []}).encode(),
        b"\x01<html><body>502 Bad Gateway</body></html>",
        b"\x02\x01\xad" + json.dumps({"error": {"code": "TooManyRequests", "message": "slow down"}}).encode(),
        b"\x02\x01\xf4" + b"\xff\xfe not utf8 " * 40,
        b"\x02\x01\x94",
    ],
    "retry_after": ["5", " 120 ", "Wed, 21 Oct 2026 07:28:00 GMT", "\n1500", "5\n250", "-1", "18446744073709551615",
                    "99999999999999999999", "\n18446744073709551615", "Thu, 01 Jan 1970 00:00:00 GMT", "soon"],
    "go_duration": ["20m", "1h30m", "90s", "1.5h", "500ms", "0s", "1us2ns", "", "20", "1d", "-5m", ".5s", "1.s",
                    "9" * 400 + "h", "1e3s", "18446744073709551616s", "1h" * 200],
    "emulator_route": [
        b"\x01/identities",
        b"\x01/identities/?api-version=2023-10-01",
        b"\x01" + TARGET.encode(),
        b"\x01/identities/8%3Aacs%3Ar_u1/:revokeAccessTokens?api-version=2023-10-01",
        b"\x02/identities/8%3Aacs%3Ar_u1?api-version=2023-10-01",
        b"\x02/identities/%FF%FE",
        b"\x02/identities/",
        b"\x00/admin/stats",
        b"\x01/admin/tokens:verify",
        b"\x01/tenant-1/oauth2/v2.0/token",
        b"\x01//oauth2/v2.0/token",
        b"\x00/identities?api-version=a&api-version=b",
        b"\x03/identities/x/y/z",
    ],
    "signature_header": [
        signed_request("POST", TARGET, b'{"scopes":["chat"]}'),
        signed_request("POST", "/identities?api-version=2023-10-01", b"", host="localhost",
                       order=("date", "host", "x-ms-content-sha256"), date_header="date"),
        signed_request("DELETE", "/identities/8:acs:r_u1?api-version=2023-10-01", b"",
                       order=("host", "x-ms-content-sha256", "x-ms-date")),
        signed_request("POST", TARGET, b'{"scopes":["chat"]}')[:-3] + b"oip",
        b"POST\n/identities\nauthorization: HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature=\n\n",
        b"POST\n/identities\nauthorization: HMAC-SHA256 SignedHeaders=host;host;host&Signature=AAAA\n\n",
        b"GET\n/\nauthorization: Bearer abc.def.ghi\n\n",
        b"GET\n/\nauthorization: Basic dXNlcjpwYXNz\n\n",
        b"GET\n/\nx-ms-date: yesterday\nhost: [::1]:\nauthorization: HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature=QQ==\n\n",
    ],
    "emulator_token": [
        token(CLAIMS),
        token({**CLAIMS, "acsScope": "chat\u00e9\u2028", "jti": "\"quoted\""}),
        token({"skypeid": 1}),
        token(CLAIMS)[:-4] + "AAAA",
        "a.b.c",
        "a.b",
        "....",
        "not a jwt",
        "eyJhbGciOiJub25lIn0.eyJza3lwZWlkIjoiYWNzOnIifQ.",
    ],
}

for target, seeds in SEEDS.items():
    folder = ROOT / target
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("seed-*"):
        old.unlink()
    for index, seed in enumerate(seeds):
        data = seed.encode() if isinstance(seed, str) else seed
        (folder / f"seed-{index:02}").write_bytes(data)
    print(f"{target}: {len(seeds)} seeds")
