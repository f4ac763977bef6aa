-- wrk script of the miss-path benchmarks (bench/peers/run, bench/ab-miss, bench/profile-miss):
-- every request a unique /search?q=<prefix>-<thread>-<n>, so every request renders.
--   wrk -s bench/miss.lua http://host:port -- <prefix>
local threads = 0
setup = function(thread) threads = threads + 1; thread:set("tid", threads) end
init = function(args) base = args[1] or "x"; n = 0 end
request = function()
  n = n + 1
  return wrk.format("GET", "/search?q=" .. base .. "-" .. tid .. "-" .. n)
end
