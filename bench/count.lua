-- wrk script for cpu_per_request.py: stops after $BENCH_REQUESTS responses (run wrk with -t1),
-- and sends POSTs with a body of $BENCH_POST_BYTES bytes when that is set.
local limit = tonumber(os.getenv("BENCH_REQUESTS") or "0") or 0
local post_bytes = tonumber(os.getenv("BENCH_POST_BYTES") or "0") or 0

if post_bytes > 0 then
   wrk.method = "POST"
   wrk.body = string.rep("a", post_bytes)
   wrk.headers["Content-Type"] = "application/octet-stream"
end

local seen = 0

function response(status, headers, body)
   seen = seen + 1
   if limit > 0 and seen >= limit then
      wrk.thread:stop()
   end
end
