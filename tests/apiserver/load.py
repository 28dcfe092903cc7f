"""Creates pods through a real kube-apiserver, one unique image each (so the
ImagePolicyWebhook plugin's answer cache never answers for the webhook),
from a few threads, until the stop file appears; every 2 s a burst of 8 to
64 more at once (a Deployment scaled up), so that the apiserver keeps
opening new connections to the webhook, as it does in a cluster. Prints one JSON line of
counts: created pods, refused pods (403) with each distinct message, and
requests the apiserver did not answer or answered with another error (it
was restarting).

Usage: python3 load.py URL CA CERT KEY STOPFILE [THREADS]
"""

import http.client
import json
import os
import ssl
import sys
import threading
import time
import urllib.parse

url, ca, cert, key, stopfile = sys.argv[1:6]
threads = int(sys.argv[6]) if len(sys.argv) > 6 else 4
target = urllib.parse.urlsplit(url)

ctx = ssl.create_default_context(cafile=ca)
ctx.load_cert_chain(cert, key)

lock = threading.Lock()
counts = {"created": 0, "refused": 0, "unanswered": 0}
refusals = {}
unanswered = {}
serial = [0]


def next_name():
    with lock:
        serial[0] += 1
        return serial[0]


def pod(n):
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"load-{os.getpid()}-{n}"},
            "spec": {
                "automountServiceAccountToken": False,
                "containers": [
                    {"name": "app", "image": f"registry.example/app:v{os.getpid()}-{n}"}
                ],
            },
        }
    )


def worker(once=False):
    conn = None
    while not os.path.exists(stopfile):
        if once and conn is not None:
            return
        n = next_name()
        try:
            if conn is None:
                conn = http.client.HTTPSConnection(
                    target.hostname, target.port, context=ctx, timeout=60
                )
            conn.request(
                "POST",
                "/api/v1/namespaces/default/pods",
                body=pod(n),
                headers={"Content-Type": "application/json"},
            )
            r = conn.getresponse()
            body = r.read()
            if r.status == 201:
                with lock:
                    counts["created"] += 1
                continue
            try:
                message = json.loads(body).get("message", "")
            except ValueError:
                message = body[:300].decode("utf-8", "replace")
            with lock:
                # 403: refused by admission (the webhook's verdict, or
                # its failure: defaultAllow is false). Anything else is
                # the apiserver itself not serving (shutting down).
                kind = "refused" if r.status == 403 else "unanswered"
                counts[kind] += 1
                seen = refusals if kind == "refused" else unanswered
                key = message if kind == "refused" else f"{r.status} {message}"
                seen[key] = seen.get(key, 0) + 1
        except (OSError, http.client.HTTPException) as e:
            # The apiserver itself is down (a restart): not a refusal by the
            # webhook, counted apart; the pod is simply created again later.
            conn = None
            with lock:
                counts["unanswered"] += 1
                k = type(e).__name__
                unanswered[k] = unanswered.get(k, 0) + 1
            time.sleep(0.2)


def bursts():
    k = 0
    while not os.path.exists(stopfile):
        time.sleep(2)
        k += 1
        size = 8 * (1 + k % 8)
        burst = [threading.Thread(target=worker, args=(True,)) for _ in range(size)]
        for t in burst:
            t.start()
        for t in burst:
            t.join()


ts = [threading.Thread(target=worker) for _ in range(threads)]
ts.append(threading.Thread(target=bursts))
start = time.time()
for t in ts:
    t.start()
for t in ts:
    t.join()
counts["seconds"] = round(time.time() - start, 1)
counts["refusals"] = refusals
counts["unanswered_by_kind"] = unanswered
print(json.dumps(counts))
