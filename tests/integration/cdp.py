"""A headless Debian chromium driven over the DevTools protocol, for the
dashboard's browser test (test_http_dashboard.py). Uses python3-websocket
(Debian's websocket-client) for the protocol's one WebSocket.

    with Chromium() as browser:
        page = browser.open("http://127.0.0.1:9464/")
        page.wait_for("document.body.dataset.refreshed >= '1'")
        page.evaluate("document.title")
        page.screenshot("dashboard.png")
"""
import base64
import json
import os
import shutil
import subprocess
import tempfile
import time

import websocket  # python3-websocket

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


class CDPError(AssertionError):
    pass


class Page:
    """One tab, attached over the browser's connection (flat sessions)."""

    def __init__(self, browser, session):
        self.browser = browser
        self.session = session

    def call(self, method, **params):
        return self.browser.call(method, session=self.session, **params)

    def evaluate(self, expression):
        """The value of a JavaScript expression in the page (JSON-able)."""
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                      awaitPromise=True)
        if "exceptionDetails" in r:
            raise CDPError("page raised on %r: %s" % (expression, r["exceptionDetails"]))
        return r["result"].get("value")

    def wait_for(self, expression, timeout=20.0, interval=0.1):
        """Until the expression is truthy in the page; returns its value."""
        deadline = time.monotonic() + timeout
        error = None
        while True:
            try:                # the page may still be loading: not yet
                value = self.evaluate(expression)
                if value:
                    return value
            except CDPError as exc:
                error = exc
            if time.monotonic() > deadline:
                raise CDPError("page: %r still false after %.0f s (%s)" % (expression, timeout, error))
            time.sleep(interval)

    def screenshot(self, path, width=1440):
        """A PNG of the whole page (as tall as its content) at `path`."""
        height = int(self.evaluate("Math.ceil(document.documentElement.scrollHeight)") or 900)
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                  deviceScaleFactor=1, mobile=False)
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))
        return path


class Chromium:
    """A headless chromium with its own profile, on a free DevTools port."""

    def __init__(self, timeout=30.0):
        if not os.path.exists(CHROMIUM):
            raise AssertionError("chromium not found (apt-get install chromium)")
        self.profile = tempfile.mkdtemp(prefix="smartshop-chromium-")
        self.timeout = timeout
        self.next_id = 0
        args = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu",
                "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
                "--disable-extensions", "--disable-background-networking", "--disable-sync",
                "--disable-component-update", "--mute-audio", "--hide-scrollbars",
                "--remote-debugging-port=0", "--remote-allow-origins=*",
                "--user-data-dir=" + self.profile, "--window-size=1440,900", "about:blank"]
        self.log = open(os.path.join(self.profile, "chromium.log"), "wb")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        try:
            self.ws = websocket.create_connection(self._browser_url(), timeout=timeout)
        except Exception:
            self.close()
            raise

    def _browser_url(self):
        """The browser's WebSocket, from the DevToolsActivePort file chromium writes."""
        marker = os.path.join(self.profile, "DevToolsActivePort")
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with open(marker) as f:
                    lines = f.read().split("\n")
                if len(lines) >= 2 and lines[1]:
                    return "ws://127.0.0.1:%s%s" % (lines[0].strip(), lines[1].strip())
            except FileNotFoundError:
                pass
            time.sleep(0.1)
        raise AssertionError("chromium did not open its DevTools port; its log:\n%s"
                             % self.log_text())

    def log_text(self):
        try:
            with open(os.path.join(self.profile, "chromium.log"), "rb") as f:
                return f.read().decode("utf-8", "replace")[-4000:]
        except OSError:
            return ""

    def call(self, method, session=None, **params):
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        self.ws.send(json.dumps(message))
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            reply = json.loads(self.ws.recv())
            if reply.get("id") != self.next_id:
                continue        # an event, or an answer to no one
            if "error" in reply:
                raise CDPError("%s: %s" % (method, reply["error"]))
            return reply.get("result", {})
        raise CDPError("%s: no answer within %.0f s" % (method, self.timeout))

    def open(self, url):
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        page = Page(self, session)
        page.call("Page.enable")
        page.call("Runtime.enable")
        page.call("Emulation.setDeviceMetricsOverride", width=1440, height=900,
                  deviceScaleFactor=1, mobile=False)
        page.call("Page.navigate", url=url)
        page.wait_for("location.href === %s && document.readyState === 'complete'" % json.dumps(url),
                      self.timeout)
        return page

    def close(self):
        try:
            if getattr(self, "ws", None):
                try:
                    self.call("Browser.close")
                except Exception:
                    pass
                self.ws.close()
        finally:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.log.close()
            shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
