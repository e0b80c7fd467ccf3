#!/usr/bin/env python3
"""A steady crowd against one autoscaling node: N new viewers per second for S seconds, with a host
publishing on the origin (so every replica must get the host's media before it takes viewers).
Prints admitted/refused (by code), stages, time to the first replica READY, and IVS calls per
1,000 admitted viewers. Usage: crowd.py <stagefleet binary> [rate] [seconds] [seats per stage]."""
import json, os, re, subprocess, sys, tempfile, threading, time, urllib.request

binary = sys.argv[1]
rate = int(sys.argv[2]) if len(sys.argv) > 2 else 50
seconds = int(sys.argv[3]) if len(sys.argv) > 3 else 60
seats = sys.argv[4] if len(sys.argv) > 4 else "50"
data = tempfile.mkdtemp(prefix="crowd-")
node = subprocess.Popen(
    [binary, "--data-dir", data, "--http-addr", "127.0.0.1:0", "--autoscale", "true",
     "--seats-per-stage", seats, "--join-rate-per-ip", "0", "--scaler-interval-ms", "250",
     "--emulator-create-stage-ms", "300", "--emulator-replication-active-ms", "500",
     "--region-subscription-quota", "0", "--log-format", "json"],
    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
url = admin = emu = None
for line in node.stdout:
    m = re.search(r"(http://127\.0\.0\.1:\d+)/graphql", line)
    url = url or (m and m.group(1))
    m = re.search(r"admin key \(shown once; keep it\): (\S+)", line)
    admin = admin or (m and m.group(1))
    m = re.search(r"emulator at (http://127\.0\.0\.1:\d+)", line)
    emu = emu or (m and m.group(1))
    if line.startswith("  data "):
        break
threading.Thread(target=lambda: [None for _ in node.stdout], daemon=True).start()

def post(u, body, key=None):
    req = urllib.request.Request(u, json.dumps(body).encode(), {"content-type": "application/json"})
    if key:
        req.add_header("authorization", f"Bearer {key}")
    return json.load(urllib.request.urlopen(req))

def gql(q, v=None, key=None):
    return post(url + "/graphql", {"query": q, "variables": v or {}}, key)

gql('mutation { startBroadcast(id: "b") { id } }', key=admin)
ht = gql('mutation { hostTokens(broadcastId: "b", userId: "host") { participantId token } }', key=admin)
host = ht["data"]["hostTokens"][0]
post(emu + "/_emulator/join", {"token": host["token"], "publish": True})
gql('mutation($p: String!) { hostPublishing(broadcastId: "b", participantId: $p) { id } }', {"p": host["participantId"]}, admin)

# The host publishes on every origin, as the broadcaster page does: new origins appear as the
# fleet grows past 5 replicas per origin, and their replicas wait until the host publishes there.
published = {host["participantId"]}
running = True
def follow_origins():
    while running:
        tokens = gql('mutation { hostTokens(broadcastId: "b", userId: "host") { participantId token } }', key=admin)
        for t in tokens.get("data", {}).get("hostTokens", []):
            if t["participantId"] not in published:
                post(emu + "/_emulator/join", {"token": t["token"], "publish": True})
                gql('mutation($p: String!) { hostPublishing(broadcastId: "b", participantId: $p) { id } }', {"p": t["participantId"]}, admin)
                published.add(t["participantId"])
        time.sleep(0.5)  # polling the API like a page watching for new origins, not synchronisation
threading.Thread(target=follow_origins, daemon=True).start()

admitted, refused, lock = 0, {}, threading.Lock()
def join(i):
    global admitted
    r = gql('mutation($u: String!) { joinBroadcast(broadcastId: "b", userId: $u) { session { id } } }', {"u": f"v{i}"})
    with lock:
        if r.get("errors"):
            code = r["errors"][0]["extensions"]["code"]
            refused[code] = refused.get(code, 0) + 1
        else:
            admitted += 1

first_ready = None
start = time.monotonic()
for i in range(rate * seconds):
    due = start + i / rate
    now = time.monotonic()
    if due > now:
        time.sleep(due - now)  # pacing the crowd, not synchronisation
    threading.Thread(target=join, args=(i,)).start()
    if first_ready is None and i % rate == 0:
        st = gql('{ stages { role ready } }', key=admin)["data"]["stages"]
        if any(s["role"] == "REPLICA" and s["ready"] for s in st):
            first_ready = time.monotonic() - start
time.sleep(2)
running = False
stages = gql('{ stages { role ready viewers capacity replication { state } } }', key=admin)["data"]["stages"]
metrics = urllib.request.urlopen(url + "/metrics").read().decode()
calls = sum(float(l.rsplit(" ", 1)[1]) for l in metrics.splitlines() if l.startswith("stagefleet_ivs_calls_total{"))
over = [s for s in stages if s["viewers"] > s["capacity"]]
print(json.dumps({
    "rate_per_s": rate, "seconds": seconds, "seats_per_stage": int(seats),
    "admitted": admitted, "refused": refused,
    "refused_pct": round(100 * sum(refused.values()) / max(1, rate * seconds), 2),
    "stages": len(stages), "replicas_ready": sum(1 for s in stages if s["role"] == "REPLICA" and s["ready"]),
    "overfilled_stages": len(over),
    "first_replica_ready_s": first_ready,
    "origins": sum(1 for s in stages if s["role"] == "ORIGIN"),
    "ivs_calls": calls, "ivs_calls_per_1000_admitted": round(1000 * calls / max(1, admitted), 1),
}))
node.terminate()
node.wait()
