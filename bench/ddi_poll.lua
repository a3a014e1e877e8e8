-- wrk script for bench/ddi_poll.sh, the same for both servers:
--   wrk ... -s bench/ddi_poll.lua URL -- REQUESTS_FILE
-- REQUESTS_FILE has one request a line, "<path>\t<Authorization value>",
-- one line per controller. Every request goes to a random line. The
-- requests are formatted once at start, so wrk spends no time on them.
local reqs = {}

function init(args)
  local f = assert(io.open(args[1], "r"))
  for line in f:lines() do
    local path, auth = line:match("^([^\t]+)\t(.+)$")
    if path then
      reqs[#reqs + 1] = wrk.format("GET", path, { ["Authorization"] = auth })
    end
  end
  f:close()
  assert(#reqs > 0, "no requests in " .. args[1])
  -- A fixed seed: both servers get the same sequence of controllers.
  math.randomseed(7)
end

function request()
  return reqs[math.random(#reqs)]
end
