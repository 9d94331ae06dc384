"""Fetches the push API's OpenAPI document and checks it with openapi-spec-validator.

Usage: openapi_check.py URL

Prints `valid version=V` when the document is a valid OpenAPI 3.1 document, then one
`operation METHOD PATH` line per operation; exits 1 with the validator's message otherwise.
"""

import json
import sys
import urllib.request

from openapi_spec_validator import validate

with urllib.request.urlopen(sys.argv[1], timeout=15) as response:
    document = json.load(response)
try:
    validate(document)
except Exception as error:  # the validator's own error types vary by version
    print("invalid %s" % str(error).splitlines()[0], flush=True)
    sys.exit(1)
print("valid version=%s" % document["openapi"])
for path, item in sorted(document["paths"].items()):
    for method in sorted(item):
        print("operation %s %s" % (method.upper(), path))
