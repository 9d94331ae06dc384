"""Mints a device token the way an app backend would: a JWT signed with the
app's secret (HS256) or with a private key whose public half Herald has
(RS256, ES256; signed by the openssl command line).

Usage: jwt_token.py APP DEVICE SECRET_OR_KEY_FILE EXPIRES_IN_SECONDS [ALG [KID]]

Prints the token (claims: app, sub = DEVICE, iat, exp = now + EXPIRES_IN_SECONDS).
"""

import base64
import hashlib
import hmac
import json
import subprocess
import sys
import time


def b64(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def part(value):
    return b64(json.dumps(value, separators=(",", ":")).encode())


def der_to_raw(der):
    """An ECDSA signature from DER (SEQUENCE of two INTEGERs) to JWT's r || s."""
    assert der[0] == 0x30
    at = 2 if der[1] < 0x80 else 3
    raw = b""
    for _ in range(2):
        assert der[at] == 0x02
        length = der[at + 1]
        value = der[at + 2 : at + 2 + length]
        raw += value.lstrip(b"\0").rjust(32, b"\0")
        at += 2 + length
    return raw


def sign(alg, key, signing_input):
    if alg == "HS256":
        return hmac.new(key.encode(), signing_input, hashlib.sha256).digest()
    der = subprocess.run(
        ["openssl", "dgst", "-sha256", "-sign", key],
        input=signing_input,
        capture_output=True,
        check=True,
    ).stdout
    return der if alg == "RS256" else der_to_raw(der)


def main():
    app, device, key, expires_in = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    alg = sys.argv[5] if len(sys.argv) > 5 else "HS256"
    header = {"alg": alg, "typ": "JWT"}
    if len(sys.argv) > 6:
        header["kid"] = sys.argv[6]
    now = int(time.time())
    claims = {"app": app, "sub": device, "iat": now, "exp": now + expires_in}
    signing_input = (part(header) + "." + part(claims)).encode()
    print(signing_input.decode() + "." + b64(sign(alg, key, signing_input)))


main()
