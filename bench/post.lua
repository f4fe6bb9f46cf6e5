-- wrk script: POST a JSON body to PATH, rotating through the bodies in FILE (one per
-- line), so that a run spreads over many accounts instead of hammering one.
--
--   wrk -s bench/post.lua http://127.0.0.1:PORT -- /login bodies.jsonl
--
-- Requests are built once per thread in init(); request() only hands out the next one.
-- Each thread starts at a different offset so threads do not walk the list in lockstep.

local next_tid = 0

function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
end

local reqs, n, i = {}, 0, 0

function init(args)
  local path, file = args[1], args[2]
  if not path or not file then
    error("usage: wrk -s post.lua URL -- PATH BODIES_FILE")
  end
  local headers = { ["Content-Type"] = "application/json" }
  for line in io.lines(file) do
    if line ~= "" then
      n = n + 1
      reqs[n] = wrk.format("POST", path, headers, line)
    end
  end
  if n == 0 then
    error("no request bodies in " .. file)
  end
  i = ((tid or 0) * 7919) % n
end

function request()
  i = i % n + 1
  return reqs[i]
end
