-- Static checks with luac5.4 -l: the modules in lua/ read only globals the
-- sandbox offers and set none; each example sets none either (policy.use
-- defines the hooks) and every file compiles.
local test, eq, ok = T.test, T.eq, T.ok

local function globals(path)
  local p = io.popen('luac5.4 -p -l -l "' .. path .. '" 2>&1')
  local out = p:read("a")
  p:close()
  local sets, gets = {}, {}
  for name in out:gmatch('SETTABUP[^\n]*; _ENV "([%w_]+)"') do sets[name] = true end
  for name in out:gmatch('GETTABUP[^\n]*; _ENV "([%w_]+)"') do gets[name] = true end
  ok(out:find("main <", 1, true), path .. " does not compile: " .. out)
  return sets, gets
end

local function files(dir)
  local p = io.popen('find "' .. dir .. '" -name "*.lua" | sort')
  local list = {}
  for f in p:lines() do list[#list + 1] = f end
  p:close()
  return list
end

test("modules: no global set, only sandbox globals read", function()
  local list = files(T.LUA_DIR)
  ok(#list >= 11, "modules found: " .. #list)
  for _, f in ipairs(list) do
    local sets, gets = globals(f)
    eq(next(sets), nil, f .. " sets a global")
    for g in pairs(gets) do ok(T.SANDBOX_GLOBALS[g], f .. " reads global " .. g) end
  end
end)

test("policies: no global set, only sandbox globals read", function()
  local list = files(T.ROOT .. "/policies")
  ok(#list >= 9, "policies found: " .. #list)
  for _, f in ipairs(list) do
    local sets, gets = globals(f)
    eq(next(sets), nil, f .. " sets a global")
    for g in pairs(gets) do ok(T.SANDBOX_GLOBALS[g], f .. " reads global " .. g) end
  end
end)

test("modules require nothing but smartshop.*", function()
  for _, f in ipairs(files(T.LUA_DIR)) do
    local fh = assert(io.open(f))
    local text = fh:read("a")
    fh:close()
    for name in text:gmatch('require%s*%(?%s*["\']([^"\']+)["\']') do
      ok(name:match("^smartshop%."), f .. " requires " .. name)
    end
  end
end)
