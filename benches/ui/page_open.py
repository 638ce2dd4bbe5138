#!/usr/bin/env python3
"""Opens the operator page (/ui) in Debian's headless chromium and signs in,
then keeps it open until killed (SIGTERM). Prints "page live" once the page
says it is following the feed. Speaks WebDriver to chromedriver with the
standard library only.

    benches/ui/page_open.py ADDR TOKEN
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

addr, token = sys.argv[1], sys.argv[2]
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
# Its own process group, so that stop() can end chromium with it: a
# chromium left behind keeps following the feed and takes CPU from every
# later measurement.
driver = subprocess.Popen(["/usr/bin/chromedriver", f"--port={port}"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          start_new_session=True)


def call(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())["value"]


session = None


def stop(*_):
    # The session first: chromedriver killed alone leaves chromium running.
    if session is not None:
        try:
            call("DELETE", f"/session/{session}")
        except OSError:
            pass
    try:
        os.killpg(driver.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    driver.wait()
    sys.exit(0)


signal.signal(signal.SIGTERM, stop)
for _ in range(600):
    try:
        if call("GET", "/status")["ready"]:
            break
    except OSError:
        time.sleep(0.05)
session = call("POST", "/session", {"capabilities": {"alwaysMatch": {
    "browserName": "chrome",
    "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": [
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--window-size=1280,1000"]}}}})["sessionId"]
base = f"/session/{session}"
call("POST", base + "/url", {"url": f"http://{addr}/ui"})
key = "element-6066-11e4-a52e-4f735466cecf"
field = call("POST", base + "/element", {"using": "css selector", "value": "#token"})[key]
call("POST", f"{base}/element/{field}/value", {"text": token})
button = call("POST", base + "/element", {"using": "css selector", "value": "#login button"})[key]
call("POST", f"{base}/element/{button}/click", {})
script = "return document.getElementById('link').textContent;"
while call("POST", base + "/execute/sync", {"script": script, "args": []}) != "live":
    time.sleep(0.1)
print("page live", flush=True)
while True:
    time.sleep(3600)
