-- wrk script: POST /api/sample with the C example body and a fresh img_md5 each time.
-- TOKEN env holds a bearer token. Non-2xx responses are counted by wrk and reported.
local token = os.getenv("TOKEN")
local counter = 0
local prefix
init = function(args)
    math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
    prefix = string.format("%08x%08x", math.random(0, 0x7fffffff), math.random(0, 0x7fffffff))
end
request = function()
    counter = counter + 1
    local body = string.format('{"img_md5":"%s%016x","timestamp":"2000-12-09","latitude":4743.546754,' ..
        '"longitude":729.55436546,"altitude":4935.3,"metadata":35983465,' ..
        '"flora":["ORCHID","DAFFODIL"],"fauna":["GOBLIN"],"calls":["MORDECAI"]}', prefix, counter)
    return wrk.format("POST", "/api/sample",
        { ["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json" }, body)
end
