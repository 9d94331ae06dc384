"""Fetches an HTTP endpoint of Herald's operations listener.

`scrape.py URL` prints `status=CODE` and then, for a Prometheus text exposition, one line per
sample, `sample NAME{LABELS} VALUE`, as parsed by the Prometheus client library's own parser
(which rejects a malformed exposition: the script then exits with status 2). Any other body is
printed as `body TEXT`.
"""

import sys
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def main():
    url = sys.argv[1]
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            status, content_type, body = response.status, response.headers.get("Content-Type", ""), response.read()
    except urllib.error.HTTPError as error:
        status, content_type, body = error.code, error.headers.get("Content-Type", ""), error.read()
    print("status=%d" % status)
    text = body.decode("utf-8")
    if not content_type.startswith("text/plain; version=0.0.4"):
        print("body %s" % text.strip())
        return
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join('%s="%s"' % item for item in sorted(sample.labels.items()))
                print("sample %s{%s} %s" % (sample.name, labels, repr(float(sample.value))))
    except ValueError as error:
        print("malformed exposition: %s" % error, file=sys.stderr)
        sys.exit(2)


main()
