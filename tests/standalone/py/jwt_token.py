"""Mints a device token the way an app backend would: an HS256 JWT.

Usage: jwt_token.py APP DEVICE SECRET EXPIRES_IN_SECONDS

Prints the token (claims: app, sub = DEVICE, iat, exp = now + EXPIRES_IN_SECONDS).
"""

import base64
import hashlib
import hmac
import json
import sys
import time


def part(value):
    raw = json.dumps(value, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


app, device, secret, expires_in = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
now = int(time.time())
signing_input = part({"alg": "HS256", "typ": "JWT"}) + "." + part(
    {"app": app, "sub": device, "iat": now, "exp": now + expires_in}
)
signature = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
print(signing_input + "." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode())
