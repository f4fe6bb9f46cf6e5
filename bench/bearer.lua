-- wrk script: GET PATH with `Authorization: Bearer <token>`, rotating through the session
-- tokens in FILE (one per line), so the server looks up many different sessions.
--
--   wrk -s bench/bearer.lua http://127.0.0.1:PORT -- /me tokens.txt
--
-- Requests are built once per thread in init(); request() only hands out the next one.

local next_tid = 0

function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
end

local reqs, n, i = {}, 0, 0

function init(args)
  local path, file = args[1], args[2]
  if not path or not file then
    error("usage: wrk -s bearer.lua URL -- PATH TOKENS_FILE")
  end
  for token in io.lines(file) do
    if token ~= "" then
      n = n + 1
      reqs[n] = wrk.format("GET", path, { ["Authorization"] = "Bearer " .. token })
    end
  end
  if n == 0 then
    error("no tokens in " .. file)
  end
  i = ((tid or 0) * 7919) % n
end

function request()
  i = i % n + 1
  return reqs[i]
end
