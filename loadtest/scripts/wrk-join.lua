-- wrk join storm (a cross-check of `loadtest join-storm` with a lighter generator).
-- Start a node with --join-rate-per-ip 0 --seats-per-stage 4000000, start broadcast "bench", then:
--   wrk -t2 -c200 -d15s -s loadtest/scripts/wrk-join.lua http://127.0.0.1:8080
counter = 0
threadid = 0
local threads = {}
function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end
request = function()
  counter = counter + 1
  local body = '{"query":"mutation($b: ID!, $u: String!) { joinBroadcast(broadcastId: $b, userId: $u) { token session { id stageId } } }","variables":{"b":"bench","u":"u' .. tid .. '-' .. counter .. '"}}'
  return wrk.format("POST", "/graphql", {["content-type"]="application/json"}, body)
end
response = function(status, headers, body)
  if status ~= 200 or string.find(body, '"errors"') then
    errors = (errors or 0) + 1
  end
end
function done(summary, latency, requests)
  local errs = 0
  for _, t in ipairs(threads) do errs = errs + (t:get("errors") or 0) end
  io.write(string.format("errors: %d of %d; p50 %.1f ms p99 %.1f ms\n", errs, summary.requests, latency:percentile(50)/1000, latency:percentile(99)/1000))
end
