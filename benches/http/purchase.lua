-- wrk script: every request buys one unit of one hot SKU (a confirmed
-- reservation), the flash-sale request hotstock serves most.
--   wrk -t2 -c64 -d10s -s benches/http/purchase.lua http://127.0.0.1:8080
wrk.method = "POST"
wrk.path = "/v1/reservations"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"lines":[{"sku":"hot","quantity":1}],"confirm":true}'

local statuses = {}
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  io.write(string.format("p50 %.0f us, p99 %.0f us, p99.9 %.0f us\n",
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
