-- A 64 KiB POST body on every request (static, so wrk's fast path is kept).
wrk.method = "POST"
wrk.body = string.rep("p", 65536)
wrk.headers["Content-Type"] = "application/octet-stream"
