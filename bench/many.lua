-- wrk script for the many-certificates OCSP scenario (bench/ocsp_many.py).
-- args: REQUESTS_FILE MODE THREADS
--   REQUESTS_FILE: DER OCSPRequests back to back, already in random order
--   MODE: "cold" (each thread sends its share once, prints "cold-done", stops) or "warm"
--         (each thread cycles through its share for the whole run)
-- Thread t (0-based) takes requests t, t+THREADS, ...: in a cold pass every request of the
-- file is sent once; a thread that has had its share answered prints "cold-done" and repeats
-- its last request until wrk is interrupted (it is not stopped: a stopped thread can leave a
-- connection open with no request on it, on which single-process openssl blocks forever).
-- Each response is counted by the X-Agentca-Worker header (the pid of the worker that
-- answered; "-" for a server without it) and answers under 400 bytes (an error status
-- instead of a signed answer) are counted as "short".
wrk.resolve = function(host, service) wrk.addrs = wrk.lookup(host, service) end
-- (no probe connection: a single-process openssl responder blocks on it forever)

local threads = {}
local counter = 0

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

local reqs = {}
local idx = 0
local share = 0
local mode = "warm"
local stopped = false
workers = {}
short = 0
answered = 0

function init(args)
  local f = assert(io.open(args[1], "rb"))
  local data = f:read("*a")
  f:close()
  mode = args[2]
  local nthreads = tonumber(args[3])
  local headers = { ["Content-Type"] = "application/ocsp-request" }
  local pos, k = 1, 0
  while pos <= #data do
    local b2 = data:byte(pos + 1)
    local len
    if b2 < 128 then
      len = 2 + b2
    elseif b2 == 0x81 then
      len = 3 + data:byte(pos + 2)
    else
      len = 4 + data:byte(pos + 2) * 256 + data:byte(pos + 3)
    end
    if k % nthreads == tid then
      reqs[#reqs + 1] = wrk.format("POST", nil, headers, data:sub(pos, pos + len - 1))
    end
    k = k + 1
    pos = pos + len
  end
  share = #reqs
  io.write("cold-ready\n")
  io.stdout:flush()
end

function request()
  idx = idx + 1
  if idx > share then
    if mode == "cold" then
      idx = share
    else
      idx = 1
    end
  end
  return reqs[idx]
end

function response(status, headers, body)
  answered = answered + 1
  local w = headers["X-Agentca-Worker"] or "-"
  workers[w] = (workers[w] or 0) + 1
  if #body < 400 then
    short = short + 1
  end
  if mode == "cold" and not stopped and answered >= share - 1 then
    stopped = true
    io.write("cold-done\n")
    io.stdout:flush()
  end
end

function done(summary, latency, requests)
  for _, t in ipairs(threads) do
    io.write(string.format("thread\t%d\t%d\n", t:get("answered") or 0, t:get("short") or 0))
    local w = t:get("workers") or {}
    for pid, n in pairs(w) do
      io.write(string.format("worker\t%s\t%d\n", pid, n))
    end
  end
end
