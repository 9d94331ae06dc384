"""One HTTP request with Python's standard client.

Usage: http_call.py METHOD URL [--key KEY] [--header NAME:VALUE]... [--body TEXT | --body-size N]

Prints `status=N`, `content-type=T`, `location=L`, `retry-after=S`, `replayed=R`,
`ratelimit=LIMIT/REMAINING/RESET` (each `-` when the header is absent), then `body=` followed by
the response body on one line.
"""

import argparse
import http.client
import urllib.parse

parser = argparse.ArgumentParser()
parser.add_argument("method")
parser.add_argument("url")
parser.add_argument("--key")
parser.add_argument("--body")
parser.add_argument("--body-size", type=int)
parser.add_argument("--header", action="append", default=[], help="NAME:VALUE, repeatable")
arguments = parser.parse_args()

url = urllib.parse.urlsplit(arguments.url)
connection = http.client.HTTPConnection(url.hostname, url.port, timeout=15)
headers = {"Content-Type": "application/json"}
if arguments.key:
    headers["Authorization"] = "Bearer " + arguments.key
for header in arguments.header:
    name, value = header.split(":", 1)
    headers[name] = value
body = arguments.body
if arguments.body_size is not None:
    body = "x" * arguments.body_size
target = url.path + ("?" + url.query if url.query else "")
connection.request(arguments.method, target, body=body, headers=headers)
response = connection.getresponse()
text = response.read().decode("utf-8")
print("status=%d" % response.status)
print("content-type=%s" % response.getheader("Content-Type", "-"))
print("location=%s" % response.getheader("Location", "-"))
print("retry-after=%s" % response.getheader("Retry-After", "-"))
print("replayed=%s" % response.getheader("Idempotent-Replayed", "-"))
print("ratelimit=%s" % "/".join(response.getheader(h, "-") for h in
                                ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")))
print("body=" + text.replace("\n", " "), flush=True)
