"""A web page listening to Herald's SSE stream in headless Chromium.

Usage: sse_page.py SSE_URL EXPECT TIMEOUT_SECONDS

Serves a page on 127.0.0.1 whose script opens `new EventSource(SSE_URL)` and reports
every event back to this script, and runs headless Chromium on it. Records, as they come:
`open` each time the stream (re)opens, `push id=ID` per push event, `gap DATA` per gap
event, then `done` once EXPECT pushes arrived (or `timeout`), and exits.
"""

import http.server
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

sse_url, expect, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])

PAGE = """<!doctype html><meta charset="utf-8"><title>herald sse</title><script>
const report = (kind, fields) => fetch("/report", {method: "POST", body: JSON.stringify({kind, ...fields})});
const source = new EventSource(%s);
source.onopen = () => report("open", {});
source.addEventListener("push", e => report("push", {id: e.lastEventId, data: JSON.parse(e.data)}));
source.addEventListener("gap", e => report("gap", {data: e.data}));
</script>""" % json.dumps(sse_url)

reports = []
lock = threading.Condition()


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = PAGE.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        report = json.loads(self.rfile.read(length))
        self.send_response(204)
        self.end_headers()
        with lock:
            reports.append(report)
            lock.notify_all()

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
threading.Thread(target=server.serve_forever, daemon=True).start()
profile = tempfile.mkdtemp(prefix="herald-chromium-")
browser = subprocess.Popen(
    ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
     "--user-data-dir=" + profile, "http://127.0.0.1:%d/" % server.server_address[1]],
    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
deadline = time.time() + timeout
shown = 0
pushes = 0
finished = "timeout"
with lock:
    while time.time() < deadline:
        while shown < len(reports):
            report = reports[shown]
            shown += 1
            if report["kind"] == "open":
                print("open", flush=True)
            elif report["kind"] == "push":
                pushes += 1
                print("push id=%s" % report["id"], flush=True)
            else:
                print("gap %s" % report["data"], flush=True)
        if pushes >= expect:
            finished = "done"
            break
        lock.wait(timeout=0.2)
browser.kill()
browser.wait()
shutil.rmtree(profile, ignore_errors=True)
print(finished, flush=True)
