#!/usr/bin/python3
"""The policy sandbox's `require` (docs/lua-library.md, docs/security.md):
Lua source from the broker's own library path only, never a C module,
never bytecode, never a path the policy names, whatever the policy does
to `package`.

The real broker loads a policy whose top level tries each way round it
(package.loadlib, C module names, '../' and absolute paths, a `package`
table of its own with path, cpath, preload, loaded and searchers) and a
policy directory and working directory that hold look-alike
smartshop/*.lua files; the policy reports what each attempt gave through
a `denied` reason. A second broker, whose library ($SMARTSHOP_LUA_PATH)
is a copy of lua/ with a real C module (lua-cjson's cjson.so) and a
compiled chunk planted in it, loads neither."""
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import brokerproc as bp  # noqa: E402

# The policy: REPORT[name] = what the attempt gave ("ok: <what it returned>"
# or "error: <message>"), set at load time; a request with payload {name}
# is refused with "<name>=<REPORT[name]>" as its reason.
POLICY = r"""
local REPORT = {}
local function try(name, fn)
  local ok, v = pcall(fn)
  if ok then
    local what = type(v)
    if what == "string" then what = v
    elseif what == "table" then what = "table" .. (v.use and " use" or "") .. (v.evil and " evil" or "") end
    REPORT[name] = "ok: " .. what
  else
    REPORT[name] = "error: " .. tostring(v)
  end
end

local SECRET = %(secret)s
local CJSON_SO = %(cjson_so)s

-- the library itself: the positive controls
try("library", function() return require "smartshop.policy" end)
try("library again", function() return require "smartshop.policy" == require "smartshop.policy" and "same" end)
try("library rule", function() return require "smartshop.rules.deny" end)

-- no package library, so no loadlib, no searchers, no cpath
try("package", function() return type(package) end)
try("package.loadlib", function() return package.loadlib(CJSON_SO, "luaopen_cjson") end)

-- C module names (lua-cjson is installed as cjson.so on this machine)
for _, name in ipairs { "cjson", "cjson.safe", "lpeg", "io", "os", "debug", "smartshop.cjson" } do
  try("C " .. name, function() return require(name) end)
end

-- paths: relative, '../', absolute, a file name, the secret beside the policy
for _, name in ipairs { "../secret", "smartshop/../secret", "smartshop.../secret",
                        "smartshop..rules.deny", "smartshop.rules/../../secret",
                        SECRET, "/etc/passwd", "smartshop./etc/passwd", "secret",
                        "smartshop.evil", "smartshop.rules.deny.lua", "smartshop.Policy",
                        "smartshop.extra", "smartshop.native", "smartshop.compiled",
                        "smartshop.", "smartshop", "" } do
  try("path " .. name, function() return require(name) end)
end

-- a module that raises as it loads: the same error each time (not a cycle)
try("broken 1", function() return require "smartshop.broken" end)
try("broken 2", function() return require "smartshop.broken" end)
-- two modules that require each other
try("cycle", function() return require "smartshop.cycle_a" end)

-- a package table of the policy's own: nothing in it is consulted
package = {
  path = %(evil_dir)s .. "/?.lua;./?.lua",
  cpath = %(evil_dir)s .. "/?.so",
  preload = { ["smartshop.hijack"] = function() return "from preload" end,
              ["smartshop.rules.alias"] = function() return "from preload" end },
  loaded = { ["smartshop.rules.canary"] = "from package.loaded" },
  searchers = { function() return function() return "from a searcher" end end },
}
try("edited secret", function() return require "secret" end)
try("edited evil", function() return require "smartshop.evil" end)
try("edited hijack", function() return require "smartshop.hijack" end)
try("edited alias", function() return require "smartshop.rules.alias" end)
try("edited canary", function() return require "smartshop.rules.canary" end)
try("edited policy", function() return require "smartshop.policy" end)
try("edited loadlib", function() return package.loadlib(CJSON_SO, "luaopen_cjson") end)

function filter(msg)
  local name = msg.payload.name
  return false, name .. "=" .. tostring(REPORT[name])
end
"""

# What the policy's neighbours hold: each would say so if it ever ran.
EVIL = 'log.warn("EVIL RAN: %s") return { evil = true, new = function() return {} end }\n'


def cjson_so():
    found = sorted(glob.glob("/usr/lib/*/lua/5.4/cjson.so"))
    if not found:
        raise AssertionError("lua-cjson's cjson.so not found (apt-get install lua-cjson)")
    return found[0]


def plant(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


class Report:
    def __init__(self, case):
        self.case = case
        self.client = case.peer(name="require-prober")

    def __getitem__(self, name):
        req = self.client.request("nobody", action="report", payload={"name": name})
        body = self.case.expectError(self.client, "denied", correlation_id=req["msg_id"])
        reason = body["payload"]["message"]
        self.case.assertTrue(reason.startswith(name + "="), reason)
        return reason[len(name) + 1:]


class RequireBase(bp.PolicyTestCase):
    """Its own setUpClass (planted files, the broker's working directory
    and library path); PolicyTestCase's tear-down removes cls.tmp."""

    @classmethod
    def lua_path(cls):
        """$SMARTSHOP_LUA_PATH for the broker, or None for the default."""
        return None

    @classmethod
    def prepare(cls):
        """Files to plant in cls.tmp before the broker starts."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="smartshop-require-")
        cls.secret = os.path.join(cls.tmp, "secret.lua")
        plant(cls.secret, EVIL % "secret.lua")
        cls.evil_dir = os.path.join(cls.tmp, "evil")
        # look-alikes: beside the policy (also the broker's working
        # directory here), in the directory the policy's package.path names,
        # and a lua/ folder beside them
        for base in (cls.tmp, cls.evil_dir, os.path.join(cls.tmp, "lua")):
            for mod in ("smartshop/evil.lua", "smartshop/policy.lua", "smartshop/rules/deny.lua",
                        "smartshop/rules/alias.lua", "smartshop/hijack.lua", "secret.lua"):
                plant(os.path.join(base, mod), EVIL % os.path.join(base, mod))
        shutil.copy(cjson_so(), os.path.join(cls.tmp, "smartshop", "cjson.so"))
        shutil.copy(cjson_so(), os.path.join(cls.evil_dir, "smartshop", "cjson.so"))
        cls.prepare()
        cls.policy = os.path.join(cls.tmp, "policy.lua")
        plant(cls.policy, POLICY % {"secret": json.dumps(cls.secret),
                                    "cjson_so": json.dumps(cjson_so()),
                                    "evil_dir": json.dumps(cls.evil_dir)})
        old = os.environ.get("SMARTSHOP_LUA_PATH")
        if cls.lua_path():
            os.environ["SMARTSHOP_LUA_PATH"] = cls.lua_path()
        else:
            os.environ.pop("SMARTSHOP_LUA_PATH", None)
        try:
            cls.broker = bp.Broker(args=["--policy", cls.policy], cwd=cls.tmp)
        finally:
            if old is None:
                os.environ.pop("SMARTSHOP_LUA_PATH", None)
            else:
                os.environ["SMARTSHOP_LUA_PATH"] = old

    def report(self):
        """{probe name: what it gave}, asked of the running policy one by one."""
        return Report(self)

    def assertNothingEvilRan(self):
        self.assertNotIn("EVIL RAN", self.broker.log_text())


class RequireTest(RequireBase):
    """The library found beside the program (build/../lua): the default."""

    def test_the_library_loads(self):
        r = self.report()
        self.assertEqual(r["library"], "ok: table use")
        self.assertEqual(r["library again"], "ok: same", "loaded once per state")
        self.assertEqual(r["library rule"], "ok: table", "the library's deny, not the one beside the policy")
        self.assertNothingEvilRan()

    def test_no_package_no_loadlib(self):
        r = self.report()
        self.assertEqual(r["package"], "ok: nil")
        self.assertRegex(r["package.loadlib"], r"^error: .*attempt to index a nil value")

    def test_no_c_module(self):
        r = self.report()
        for name in ("cjson", "cjson.safe", "lpeg", "io", "os", "debug"):
            with self.subTest(module=name):
                self.assertRegex(r["C " + name], r"^error: .*require: '%s' is not a module of the "
                                 r"broker's library" % name.replace(".", r"\."))
        # a name of the library's form with only a C file beside the policy
        self.assertRegex(r["C smartshop.cjson"], r"^error: .*require: no module 'smartshop\.cjson'")
        self.assertNothingEvilRan()

    def test_no_path_the_policy_names(self):
        r = self.report()
        names = ["../secret", "smartshop/../secret", "smartshop.../secret", "smartshop..rules.deny",
                 "smartshop.rules/../../secret", self.secret, "/etc/passwd", "smartshop./etc/passwd",
                 "secret", "smartshop.Policy", "smartshop.", "smartshop", ""]
        for name in names:
            with self.subTest(name=name):
                self.assertRegex(r["path " + name], r"^error: .*is not a module of the broker's library")
        # well formed, but not in the library: beside the policy, in the
        # working directory or in a lua/ there it is not looked for
        for name in ("smartshop.evil", "smartshop.rules.deny.lua", "smartshop.extra",
                     "smartshop.native", "smartshop.compiled"):
            with self.subTest(name=name):
                self.assertRegex(r["path " + name], r"^error: .*require: no module '%s'"
                                 % name.replace(".", r"\."))
        self.assertNothingEvilRan()

    def test_package_edits_change_nothing(self):
        r = self.report()
        for name in ("edited secret",):
            self.assertRegex(r[name], r"^error: .*is not a module of the broker's library")
        for name in ("edited evil", "edited hijack"):
            with self.subTest(probe=name):
                self.assertRegex(r[name], r"^error: .*require: no module")
        self.assertEqual(r["edited alias"], "ok: table", "package.preload is not consulted")
        self.assertEqual(r["edited canary"], "ok: table", "package.loaded is not consulted")
        self.assertEqual(r["edited policy"], "ok: table use")
        self.assertRegex(r["edited loadlib"], r"^error: .*attempt to call a nil value")
        self.assertNothingEvilRan()


class RequireLibraryDirTest(RequireBase):
    """$SMARTSHOP_LUA_PATH names the library: a copy of lua/ with a C module
    and a compiled chunk planted in it. Only source files load."""

    @classmethod
    def lua_path(cls):
        return cls.lib

    @classmethod
    def prepare(cls):
        cls.lib = os.path.join(cls.tmp, "lib")
        shutil.copytree(os.path.join(bp.REPO_ROOT, "lua"), cls.lib)
        plant(os.path.join(cls.lib, "smartshop", "extra.lua"), 'return "from the library"\n')
        plant(os.path.join(cls.lib, "smartshop", "broken.lua"), 'error("broken at load")\n')
        plant(os.path.join(cls.lib, "smartshop", "cycle_a.lua"), 'return require "smartshop.cycle_b"\n')
        plant(os.path.join(cls.lib, "smartshop", "cycle_b.lua"), 'return require "smartshop.cycle_a"\n')
        # a C module with a name of the library's form, in the library
        shutil.copy(cjson_so(), os.path.join(cls.lib, "smartshop", "native.so"))
        # bytecode under a .lua name
        src = os.path.join(cls.tmp, "bytecode_src.lua")
        plant(src, 'log.warn("EVIL RAN: bytecode") return "bytecode ran"\n')
        subprocess.run(["luac5.4", "-o", os.path.join(cls.lib, "smartshop", "compiled.lua"), src],
                       check=True)

    def test_only_source_from_the_library(self):
        r = self.report()
        self.assertEqual(r["library"], "ok: table use")
        self.assertEqual(r["path smartshop.extra"], "ok: from the library", "the library named")
        self.assertRegex(r["path smartshop.native"], r"^error: .*require: no module 'smartshop\.native'")
        self.assertRegex(r["path smartshop.compiled"], r"^error: .*attempt to load a binary chunk")
        for name in ("C cjson", "path ../secret", "path " + self.secret, "edited secret"):
            with self.subTest(probe=name):
                self.assertRegex(r[name], r"^error: .*is not a module of the broker's library")
        self.assertRegex(r["path smartshop.evil"], r"^error: .*require: no module")
        self.assertNothingEvilRan()

    def test_a_module_that_fails_to_load_fails_again(self):
        r = self.report()
        self.assertRegex(r["broken 1"], r"^error: .*broken\.lua:1: broken at load")
        self.assertRegex(r["broken 2"], r"^error: .*broken\.lua:1: broken at load",
                         "a failed load is not taken for a module requiring itself")
        self.assertRegex(r["cycle"], r"^error: .*require: 'smartshop\.cycle_a' requires itself")

    def test_the_bench_loads_the_same(self):
        """smartshop-policy: the same sandbox code, the same library rules."""
        bench = os.path.join(os.path.dirname(bp.broker_path()), "smartshop-policy")
        rec = os.path.join(self.tmp, "probes.jsonl")
        probes = ["path smartshop.extra", "path smartshop.native", "path smartshop.compiled",
                  "C cjson", "path ../secret", "edited alias"]
        with open(rec, "w") as f:
            for i, name in enumerate(probes):
                f.write(json.dumps({"type": "request", "msg_id": "p%d" % i, "src": "web",
                                    "dst": "x", "action": "report", "payload": {"name": name}}) + "\n")
        env = dict(os.environ, SMARTSHOP_LUA_PATH=self.lib)
        out = subprocess.run([bench, self.policy, rec], capture_output=True, text=True, env=env,
                             timeout=30 * bp.SLOW, cwd=self.tmp)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        lines = {l.split(":")[1].strip(): l for l in out.stdout.splitlines() if l[:1].isdigit()}
        self.assertIn('"path smartshop.extra=ok: from the library"', lines["p0"])
        self.assertIn("no module 'smartshop.native'", lines["p1"])
        self.assertIn("attempt to load a binary chunk", lines["p2"])
        self.assertIn("is not a module of the broker's library", lines["p3"])
        self.assertIn("is not a module of the broker's library", lines["p4"])
        self.assertIn('"edited alias=ok: table"', lines["p5"])
        self.assertNotIn("EVIL RAN", out.stdout + out.stderr)


if __name__ == "__main__":
    bp.main()
