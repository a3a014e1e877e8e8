-- wrk script of bench/http_poll.sh: each request polls as a random vehicle
-- of the sample, with that vehicle's own token.
--
--   wrk ... -s bench/http_poll.lua URL -- SAMPLE_FILE SHARE_304
--
-- SAMPLE_FILE has "VIN TOKEN ETAG" lines. SHARE_304 (0..1) is the share of
-- requests that send the vehicle's current ETag as If-None-Match (answered
-- 304); the others send none (answered 200 with the document). Requests are
-- formatted once in init, so the load generator spends its time on the
-- sockets, not on Lua string building.

local plain, conditional = {}, {}
local share = 0

function init(args)
  share = tonumber(args[2] or "0")
  for line in io.lines(args[1]) do
    local vin, token, etag = line:match("^(%S+) (%S+) (%S+)$")
    if vin then
      local path = "/v1/vehicles/" .. vin .. "/actions"
      plain[#plain + 1] = wrk.format("GET", path, { ["Authorization"] = "Bearer " .. token })
      conditional[#conditional + 1] = wrk.format("GET", path, {
        ["Authorization"] = "Bearer " .. token,
        ["If-None-Match"] = '"' .. etag .. '"',
      })
    end
  end
  assert(#plain > 0, "no vehicles in " .. args[1])
  math.randomseed(7)
end

function request()
  local i = math.random(#plain)
  if math.random() < share then
    return conditional[i]
  end
  return plain[i]
end
