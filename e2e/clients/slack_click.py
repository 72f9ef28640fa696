"""Posts a Slack interaction to Tollgate's gateway as Slack does: the payload form-encoded, signed
with the app's signing secret (v0: HMAC-SHA256 of "v0:<timestamp>:<body>").

Usage: slack_click.py <url> <signing secret> <payload JSON> [<options JSON>]
Options: {"age": seconds the timestamp lies in the past, "secret": a different key to sign with,
"times": how often to send the very same request}. Prints one JSON line per request sent:
{"status": ..., "body": ...}.
"""

import hashlib
import hmac
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

url, secret, payload = sys.argv[1], sys.argv[2], sys.argv[3]
options = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
body = urllib.parse.urlencode({"payload": payload}).encode()
timestamp = str(int(time.time()) - int(options.get("age", 0)))
key = options.get("secret", secret).encode()
signature = "v0=" + hmac.new(key, b"v0:" + timestamp.encode() + b":" + body, hashlib.sha256).hexdigest()
for _ in range(int(options.get("times", 1))):
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "content-type": "application/x-www-form-urlencoded",
        "x-slack-request-timestamp": timestamp,
        "x-slack-signature": signature,
    })
    try:
        with urllib.request.urlopen(request, timeout=20) as r:
            print(json.dumps({"status": r.status, "body": r.read().decode()}))
    except urllib.error.HTTPError as e:
        print(json.dumps({"status": e.code, "body": e.read().decode()}))
