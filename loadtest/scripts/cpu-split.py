#!/usr/bin/env python3
"""Where a join storm's CPU goes, by thread, in units of the node's own signing work.

Runs `loadtest join-storm` (open loop, 200 concurrent clients) against a node it starts, reads
/proc/<pid>/task/*/stat of the node and of the load generator over a 5 s window mid-storm, and
prints the cores each thread group used plus two ratios: the node's non-signing CPU and the load
generator's CPU, each divided by the CPU its signer threads used. Both sides run on the same cores in
the same seconds, so the ratios hold still while the machine's speed drifts (calibrate moves by
+-20% between runs here). On a 2-core machine where two threads sign twice what one does, admitted
joins reach 50% of the 2-thread signing rate when the two ratios add up to at most 1.0: signing fills one
core, everything else the other (two threads usually sign less than twice as much, which loosens this).

Usage (from the repository root, after `cargo build --release --workspace`):
    python3 loadtest/scripts/cpu-split.py [STAGEFLEET_BIN [VIEWERS [SERVER_FLAG ...]]]
e.g. python3 loadtest/scripts/cpu-split.py target/release/stagefleet 60000 --group-commit-in-flight=1
"""
import subprocess, time, os, sys, glob, re
binary = sys.argv[1] if len(sys.argv) > 1 else "target/release/stagefleet"
viewers = sys.argv[2] if len(sys.argv) > 2 else "60000"
lt = subprocess.Popen([os.environ.get("LOADTEST", "target/release/loadtest"),"join-storm","--server-bin",binary,"--viewers",viewers,"--concurrency","200","--server-arg=--seats-per-stage=1000000","--no-verify", "--threads", os.environ.get("LOADTEST_THREADS", "1")] + [f"--server-arg={a}" for a in sys.argv[3:]], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
def threads(pid):
    out = {}
    for t in glob.glob(f"/proc/{pid}/task/*"):
        try:
            st = open(t+"/stat").read()
            name = st[st.index("(")+1:st.rindex(")")]
            f = st[st.rindex(")")+2:].split()
            out[t] = (name, int(f[11])+int(f[12]))
        except Exception: pass
    return out
time.sleep(4)
# The node is the load generator's child process.
children = subprocess.run(["pgrep", "-P", str(lt.pid)], capture_output=True, text=True).stdout.split()
if not children:
    sys.exit("no node process found under the load generator (did it start?)")
spid = children[-1]
a, la = threads(spid), threads(lt.pid)
t0 = time.time(); time.sleep(5); t1 = time.time()
b, lb = threads(spid), threads(lt.pid)
out = lt.communicate()[0]
def agg(a,b):
    g = {}
    for k,(n,v) in b.items():
        n2 = re.sub(r"[-_ ]?\d+$","",n)
        g[n2] = g.get(n2,0) + v - a.get(k,(n,v))[1]
    return g
g, lg = agg(a,b), agg(la,lb)
m = re.search(r"ok ([\d.]+)/s", out)
rate = float(m.group(1)) if m else 0
sign = g.get("signer",0)
other = sum(v for k,v in g.items() if k!="signer")
load = sum(lg.values())
secs = t1-t0
print(f"rate {rate:.0f}/s  server threads (cores): " + " ".join(f"{k}={v/100/secs:.2f}" for k,v in sorted(g.items())) + f"  loadgen={load/100/secs:.2f}")
print(f"non-signing server CPU / signing CPU = {other/sign:.3f}; loadgen / signing = {load/sign:.3f}")
