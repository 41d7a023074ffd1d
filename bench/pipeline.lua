-- wrk script: send DEPTH (default 16) GET requests per write; PATH env picks the path.
local depth = tonumber(os.getenv("DEPTH") or "16")
local path = os.getenv("WRK_PATH") or "/health"
init = function(args)
    local r = {}
    for i = 1, depth do
        r[i] = wrk.format("GET", path)
    end
    req = table.concat(r)
end
request = function()
    return req
end
