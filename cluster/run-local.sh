#!/usr/bin/env bash
# A three-node stagefleet cluster on this machine, loopback only, for trying the cluster out.
#
#   cargo build --release          # once, from the repository root; this script never builds
#   cluster/run-local.sh           # from the repository root; Ctrl-C stops everything
#
# It starts one standalone IVS emulator (127.0.0.1:4566) that all three nodes share, and nodes
# 1..3 with HTTP on 127.0.0.1:808N and Raft on 127.0.0.1:700N. Everything lives in $CLUSTER_DIR
# (default /tmp/stagefleet-cluster): the cluster secret and the key-encryption key (made on the
# first run, reused after), one data dir and one log per node, and the emulator's state and log.
# Run it again to restart the same cluster; delete $CLUSTER_DIR to start from nothing.
#
# Environment:
#   STAGEFLEET_BIN  the binary (default target/release/stagefleet)
#   CLUSTER_DIR     where state and logs go (default /tmp/stagefleet-cluster)
set -euo pipefail

BIN=${STAGEFLEET_BIN:-target/release/stagefleet}
CLUSTER_DIR=${CLUSTER_DIR:-/tmp/stagefleet-cluster}
EMULATOR_ADDR=127.0.0.1:4566
NODES=(1 2 3)
JOIN=127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003

if [[ ! -x $BIN ]]; then
    echo "run-local: no executable at $BIN." >&2
    echo "  Build it first with 'cargo build --release' (from the repository root), or set STAGEFLEET_BIN." >&2
    exit 1
fi

# Secrets and data stay private to this user.
umask 077
mkdir -p "$CLUSTER_DIR"
chmod 700 "$CLUSTER_DIR"

SECRET_FILE=$CLUSTER_DIR/cluster-secret
KEK_FILE=$CLUSTER_DIR/key-encryption-key
if [[ ! -s $SECRET_FILE ]]; then
    head -c 24 /dev/urandom | base64 >"$SECRET_FILE" # 32 characters
fi
if [[ ! -s $KEK_FILE ]]; then
    head -c 32 /dev/urandom | base64 >"$KEK_FILE"
fi
# Through the environment, not a flag: the command lines of processes are visible to every user.
STAGEFLEET_CLUSTER_SECRET=$(<"$SECRET_FILE")
export STAGEFLEET_CLUSTER_SECRET

# True when something accepts TCP connections on 127.0.0.1:$1.
listening() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

for port in 4566 7001 7002 7003 8081 8082 8083; do
    if listening "$port"; then
        echo "run-local: port $port on 127.0.0.1 is already in use (an earlier run still going?)" >&2
        exit 1
    fi
done

# Children run in their own session when setsid exists, so Ctrl-C reaches only this script and
# each child gets exactly one SIGTERM from the trap below.
SETSID=()
if command -v setsid >/dev/null; then
    SETSID=(setsid)
fi

declare -A PIDS=() # name -> pid of the children still running

stop_all() {
    trap - EXIT INT TERM
    if ((${#PIDS[@]} > 0)); then
        echo
        echo "run-local: stopping ${!PIDS[*]} (SIGTERM to pids ${PIDS[*]}; they drain for a few seconds)"
        kill -TERM "${PIDS[@]}" 2>/dev/null || true
        wait "${PIDS[@]}" 2>/dev/null || true
    fi
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME LOG ARGS...: run the binary in the background, output to LOG.
start() {
    local name=$1 log=$2
    shift 2
    "${SETSID[@]}" "$BIN" "$@" >>"$log" 2>&1 &
    PIDS[$name]=$!
}

start ivs-emulator "$CLUSTER_DIR/ivs-emulator.log" \
    ivs-emulator --listen "$EMULATOR_ADDR" --state-file "$CLUSTER_DIR/ivs-emulator-state.json"

for _ in $(seq 50); do
    listening 4566 && break
    sleep 0.1
done
if ! listening 4566; then
    echo "run-local: the IVS emulator did not start listening; see $CLUSTER_DIR/ivs-emulator.log" >&2
    exit 1
fi

for n in "${NODES[@]}"; do
    start "node$n" "$CLUSTER_DIR/node$n.log" \
        --node-id "$n" \
        --data-dir "$CLUSTER_DIR/node$n" \
        --http-addr "127.0.0.1:808$n" \
        --raft-addr "127.0.0.1:700$n" \
        --bootstrap-expect 3 \
        --join "$JOIN" \
        --key-encryption-key-file "$KEK_FILE" \
        --ivs-backend emulator \
        --ivs-endpoint-url "http://$EMULATOR_ADDR"
done

# Wait (up to a minute) for each node to say it is ready; without curl, just carry on.
if command -v curl >/dev/null; then
    for n in "${NODES[@]}"; do
        for _ in $(seq 120); do
            curl -fsS -o /dev/null "http://127.0.0.1:808$n/readyz" 2>/dev/null && break
            if ! kill -0 "${PIDS[node$n]}" 2>/dev/null; then
                break # the node exited: its log says why
            fi
            sleep 0.5
        done
        if curl -fsS -o /dev/null "http://127.0.0.1:808$n/readyz" 2>/dev/null; then
            echo "node$n ready"
        else
            echo "node$n not ready yet: see $CLUSTER_DIR/node$n.log and http://127.0.0.1:808$n/readyz"
        fi
    done
fi

cat <<INFO

stagefleet cluster of three nodes (state and logs in $CLUSTER_DIR)
  node1  http://127.0.0.1:8081/graphql   raft 127.0.0.1:7001   log $CLUSTER_DIR/node1.log
  node2  http://127.0.0.1:8082/graphql   raft 127.0.0.1:7002   log $CLUSTER_DIR/node2.log
  node3  http://127.0.0.1:8083/graphql   raft 127.0.0.1:7003   log $CLUSTER_DIR/node3.log
  IVS    emulator at http://$EMULATOR_ADDR   log $CLUSTER_DIR/ivs-emulator.log
  admin key: printed once, on the first start, in a node's log:  grep -h 'admin key' $CLUSTER_DIR/node*.log

Ctrl-C stops the cluster.
INFO

# Wait for Ctrl-C. A child that ends on its own (say, a node you killed to watch the others carry
# on) is reported and the rest keep running.
while ((${#PIDS[@]} > 0)); do
    wait -n || true
    for name in "${!PIDS[@]}"; do
        if ! kill -0 "${PIDS[$name]}" 2>/dev/null; then
            echo "run-local: $name (pid ${PIDS[$name]}) exited; see $CLUSTER_DIR/$name.log"
            unset "PIDS[$name]"
        fi
    done
done
echo "run-local: every process has exited"
