#!/usr/bin/env bash
# Installs what the browser tests (tests/media_browser.rs -> tests/browser/media.mjs) need:
#   * Debian's chromium at /usr/bin/chromium (playwright's own browser download cannot work here:
#     only package registries are reachable, so we drive the distro build instead);
#   * node_modules from package-lock.json (pinned amazon-ivs-web-broadcast and playwright-core).
# Idempotent and quiet when there is nothing to do; on failure it prints the failing step and
# its log, and exits non-zero. Safe to run from any directory.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
log="$(mktemp -t stagefleet-browser-setup.XXXXXX)"
trap 'rm -f "$log"' EXIT

fail() {
    echo "tests/browser/setup.sh: $1" >&2
    if [[ -s "$log" ]]; then
        echo "---- last 40 lines of output ----" >&2
        tail -n 40 "$log" >&2
    fi
    exit 1
}

# Runs "$@" with its output captured in $log (shown only if a later step fails).
quiet() { "$@" >>"$log" 2>&1; }

# ---- node ---------------------------------------------------------------------------------------
command -v node >/dev/null || fail "node is not installed (need Node >= 20)"
command -v npm >/dev/null || fail "npm is not installed"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
(( node_major >= 20 )) || fail "node $(node --version) is too old (need >= 20)"

# ---- chromium -----------------------------------------------------------------------------------
if [[ ! -x /usr/bin/chromium ]]; then
    [[ "$(id -u)" == 0 ]] || fail "/usr/bin/chromium is missing and we are not root: apt-get install chromium"
    export DEBIAN_FRONTEND=noninteractive
    apt_install() { quiet apt-get install -y --no-install-recommends chromium; }
    # Refresh the package lists only when they are older than a day (or absent): a machine
    # image's lists can be weeks old and would install an outdated Chromium (seen: 148 from the
    # image's lists vs 156 current), or 404 once the mirror drops that build. apt stamps list
    # files with the mirror's dates, and the security suite's change at least daily, so "any list
    # file from the last day" means a recent `apt-get update`.
    if ! find /var/lib/apt/lists -maxdepth 1 \( -name '*InRelease' -o -name '*_Packages*' \) -mmin -1440 \
            2>/dev/null | grep -q .; then
        quiet apt-get update || fail "apt-get update failed"
    fi
    if ! apt_install; then
        # Lists fresh by date can still point at a superseded build: one refresh and retry.
        quiet apt-get update || fail "apt-get update failed"
        apt_install || fail "apt-get install -y --no-install-recommends chromium failed"
    fi
    [[ -x /usr/bin/chromium ]] || fail "chromium was installed but /usr/bin/chromium is missing"
fi
# A broken install (missing shared libraries) shows here rather than as a cryptic launch error.
quiet /usr/bin/chromium --headless --no-sandbox --version \
    || fail "/usr/bin/chromium is installed but does not run"

# ---- node_modules -------------------------------------------------------------------------------
# npm ci wipes and reinstalls node_modules, so only run it when node_modules is missing or was
# installed from a different package-lock.json (we keep the lock's hash in a stamp file).
stamp="$here/node_modules/.stagefleet-lock.sha256"
want="$(sha256sum "$here/package-lock.json" | cut -d' ' -f1)"
have="$(cat "$stamp" 2>/dev/null || true)"
if [[ "$want" != "$have" \
      || ! -f "$here/node_modules/amazon-ivs-web-broadcast/dist/amazon-ivs-web-broadcast.js" \
      || ! -f "$here/node_modules/playwright-core/package.json" ]]; then
    # --ignore-scripts: neither package needs an install script, and playwright's would try to
    # download a browser. --no-audit/--no-fund: no extra registry round trips.
    (cd "$here" && quiet npm ci --ignore-scripts --no-audit --no-fund) || fail "npm ci failed"
    echo "$want" >"$stamp"
fi
