-- Sends 16 GET requests in one write; wrk counts each response as a request.
local batch
init = function(args)
  local r = {}
  for i = 1, 16 do
    r[i] = wrk.format("GET", "/")
  end
  batch = table.concat(r)
end
request = function()
  return batch
end
