-- wrk script: POST /event with 1,000 distinct users (requests formatted once, at init).
local n = 1000
local reqs = {}
local i = 0
init = function(args)
    for k = 1, n do
        reqs[k] = wrk.format("POST", "/event", { ["Content-Type"] = "application/json" },
            string.format('{"userId":"user%d","value":%d.%d}', k, k % 97, k % 10))
    end
end
request = function()
    i = i % n + 1
    return reqs[i]
end
