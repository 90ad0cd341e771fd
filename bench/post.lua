-- wrk script for the raw HTTPS limit: POSTs the body billogram sends for a
-- credit payment of 250, with the headers it sends, and prints one
-- machine-readable line (latencies in microseconds) for bench-session.sh.
wrk.method = "POST"
wrk.body = '{"mode":"amount","amount":250}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json"

function done(summary, latency, requests)
	local e = summary.errors
	io.write(string.format(
		"BENCH-WRK requests=%d duration_us=%d p50_us=%d p99_us=%d mean_us=%.1f "
		.. "max_us=%d err_connect=%d err_read=%d err_write=%d err_status=%d err_timeout=%d\n",
		summary.requests, summary.duration,
		latency:percentile(50), latency:percentile(99), latency.mean, latency.max,
		e.connect, e.read, e.write, e.status, e.timeout))
end
