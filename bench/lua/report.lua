-- Appended to every workload script: prints one machine-readable line that
-- bench/run.py parses (latencies and duration in microseconds). The
-- percentiles are wrk's own (its histogram after its coordinated-omission
-- correction); wrk 4.1 returns 0 for a percentile that the correction pushed
-- out of its histogram's range (seen with pipelining): run.py shows "n/a".
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH_RESULT requests=%d duration_us=%d bytes=%d p50_us=%d p90_us=%d p99_us=%d max_us=%d " ..
    "err_connect=%d err_read=%d err_write=%d err_status=%d err_timeout=%d\n",
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
