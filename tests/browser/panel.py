#!/usr/bin/env python3
"""The controller's web panel, driven in headless Chromium.

    panel.py --url http://127.0.0.1:9995 --token TOKEN --screenshots DIR \
             --join "CMD {nwid}" --join "CMD {nwid}"

Signs in (after a wrong token is refused), creates a network through the form, makes the
nodes join it (each --join is a shell command; {nwid} is replaced by the new network's
id), authorizes them by clicking, waits for their direct link in the mesh picture,
renames a member, adds and removes a route, checks that a bad route shows the API's own
error, that nothing came from another origin, that the page fits a 375 px phone, and
signs out. Prints one line per step; on the first step that does not hold it prints why,
saves DIR/failure.png and exits 1.

Needs python3-selenium 4.x, chromium and chromium-driver (/usr/bin/chromedriver).
"""

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_CANDIDATES = ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"]
HEX10 = re.compile(r"\b[0-9a-f]{10}\b")
IPV4 = re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}")


class Failed(Exception):
    """A step that does not hold."""


class Timeout(Exception):
    """The whole run took too long."""


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True, help="the panel, e.g. http://127.0.0.1:9995")
    p.add_argument("--token", required=True, help="the admin token")
    p.add_argument("--screenshots", required=True, help="a directory for the screenshots")
    p.add_argument(
        "--join",
        action="append",
        default=[],
        help="a shell command that makes one node join; {nwid} is the network id (once per node)",
    )
    p.add_argument("--deadline", type=int, default=170, help="seconds for the whole run")
    args = p.parse_args()
    if len(args.join) < 2:
        p.error("give --join at least twice: the test authorizes and links two members")
    args.url = args.url.rstrip("/")
    return args


class Panel:
    def __init__(self, args):
        self.args = args
        self.step_name = "start"
        self.profile = tempfile.mkdtemp(prefix="panel-chromium-")
        os.makedirs(args.screenshots, exist_ok=True)
        opts = webdriver.ChromeOptions()
        binary = next((c for c in CHROMIUM_CANDIDATES if os.path.exists(c)), None)
        if binary:
            opts.binary_location = binary
        for a in [
            "--headless=new",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--window-size=1280,900",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-sync",
            "--disable-component-update",
            "--password-store=basic",
            f"--user-data-dir={self.profile}",
        ]:
            opts.add_argument(a)
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
        self.driver.set_page_load_timeout(30)
        self.driver.set_script_timeout(20)

    # ------------------------------------------------------------------ helpers

    def js(self, script, *args):
        return self.driver.execute_script(script, *args)

    def fetch(self, method, path, token=None, body=None):
        """`fetch` from the page's own context: {status, body} (body parsed as JSON)."""
        return self.driver.execute_async_script(
            """
            const [method, path, token, body, done] = arguments;
            const headers = {};
            if (token !== null) headers.Authorization = 'Bearer ' + token;
            const init = {method, headers, cache: 'no-store'};
            if (body !== null) { headers['Content-Type'] = 'application/json'; init.body = JSON.stringify(body); }
            fetch(path, init).then(async (r) => {
              const text = await r.text();
              let parsed = null;
              try { parsed = JSON.parse(text); } catch (e) { parsed = text; }
              done({status: r.status, body: parsed, csp: r.headers.get('content-security-policy')});
            }, (e) => done({status: -1, body: String(e), csp: null}));
            """,
            method,
            path,
            token,
            body,
        )

    def wait(self, what, timeout, probe, interval=0.2):
        """Polls `probe` until it returns something truthy; fails with `what` and the last
        value or exception after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            try:
                value = probe()
                if value:
                    return value
                last = value
            except WebDriverException as e:
                last = f"{type(e).__name__}: {e.msg if hasattr(e, 'msg') else e}"
            if time.monotonic() > deadline:
                raise Failed(f"timed out after {timeout} s waiting for {what}; last seen: {last!r}")
            time.sleep(interval)

    def check(self, cond, message):
        if not cond:
            raise Failed(message)

    def shot(self, name):
        path = os.path.join(self.args.screenshots, name)
        self.driver.save_screenshot(path)

    def visible(self, element_id):
        return self.js(
            """
            const el = document.getElementById(arguments[0]);
            if (!el) return false;
            const r = el.getBoundingClientRect();
            return !el.closest('[hidden]') && r.width > 0 && r.height > 0 &&
                   getComputedStyle(el).visibility !== 'hidden';
            """,
            element_id,
        )

    def error_text(self):
        """The error banner's text while it shows, else None."""
        if not self.visible("error"):
            return None
        return self.js("return document.getElementById('error').textContent")

    def type_into(self, element_id, text):
        el = self.driver.find_element(By.ID, element_id)
        el.clear()
        el.send_keys(text)

    def click(self, css):
        el = self.driver.find_element(By.CSS_SELECTOR, css)
        self.js("arguments[0].scrollIntoView({block: 'center'})", el)
        el.click()

    def member_rows(self):
        return self.js(
            """
            return Array.from(document.querySelectorAll('#members-body tr[data-node]')).map((tr) => ({
              node: tr.dataset.node,
              state: tr.dataset.state,
              online: tr.dataset.online,
              name: (tr.querySelector('td.name') || {}).textContent || '',
              ipv4: Array.from(tr.querySelectorAll('td.addresses .ipv4')).map((d) => d.textContent.trim()),
              badge: (tr.querySelector('.badge') || {}).textContent || '',
              highlighted: tr.classList.contains('waiting'),
            }));
            """
        )

    def step(self, n, name, fn):
        self.step_name = f"step {n}: {name}"
        t0 = time.monotonic()
        detail = fn()
        extra = f": {detail}" if detail else ""
        print(f"ok   step {n:>2}: {name} ({time.monotonic() - t0:.1f} s){extra}", flush=True)

    def console_problems(self):
        """CSP violations and uncaught exceptions in the browser console."""
        try:
            logs = self.driver.get_log("browser")
        except WebDriverException:
            return []
        self.console = getattr(self, "console", []) + logs
        bad = []
        for entry in self.console:
            msg = entry.get("message", "")
            if "Content Security Policy" in msg or "Uncaught" in msg or "SyntaxError" in msg:
                bad.append(msg)
        return bad

    # ------------------------------------------------------------------ the steps

    def s1_signin_page(self):
        d = self.driver
        d.get(self.args.url + "/")
        self.wait("the sign-in page (#token and #sign-in)", 10, lambda: self.visible("token") and self.visible("sign-in"))
        self.check(not self.visible("sign-out"), "the sign-out button shows before signing in")
        self.shot("signin.png")
        wrong = "0" * 64 if self.args.token != "0" * 64 else "1" * 64
        self.type_into("token", wrong)
        self.click("#sign-in")
        shown = self.wait("an error for the wrong token in #error", 10, self.error_text)
        expected = self.fetch("GET", "/v1/networks", token=wrong)
        self.check(expected["status"] == 401, f"a wrong token should get 401, got {expected}")
        want = expected["body"].get("error") if isinstance(expected["body"], dict) else None
        self.check(want, f"the 401 should carry {{\"error\": ...}}, got {expected['body']!r}")
        self.check(shown == want, f"#error shows {shown!r}, the API said {want!r}")
        self.check(self.visible("token"), "the sign-in page went away after a wrong token")
        self.check(self.js("return sessionStorage.length") == 0, "a wrong token was stored in sessionStorage")
        bare = self.fetch("GET", "/v1/networks")
        self.check(bare["status"] == 401, f"GET /v1/networks without a token answered {bare['status']}, not 401")
        return f"wrong token refused with {shown!r}; no token: 401"

    def s2_signin(self):
        self.type_into("token", self.args.token)
        self.click("#sign-in")
        self.wait("the networks page after signing in", 10, lambda: self.visible("page-networks") and self.visible("net-create"))
        self.check(not self.visible("token"), "the sign-in form still shows")
        self.check(self.error_text() is None, f"an error shows after signing in: {self.error_text()!r}")
        self.check(self.visible("sign-out"), "no sign-out button after signing in")
        stored = self.js("return Object.values(sessionStorage)")
        self.check(stored == [self.args.token], "sessionStorage should hold the token (and only it)")
        self.check(self.js("return localStorage.length") == 0, "something was put in localStorage")
        self.check(self.js("return document.cookie") == "", "the panel set a cookie")

    def s3_create_network(self):
        self.type_into("net-name", "panel-test")
        self.click("#net-create")
        nwid = self.wait(
            "the new network's id on the page ([data-nwid])",
            10,
            lambda: self.js(
                """
                const el = document.querySelector('#page-network:not([hidden]) #net-id[data-nwid]');
                const title = document.getElementById('net-title');
                return el && /^[0-9a-f]{16}$/.test(el.dataset.nwid) && title.textContent === 'panel-test'
                  ? el.dataset.nwid : null;
                """
            ),
        )
        got = self.fetch("GET", f"/v1/networks/{nwid}", token=self.args.token)
        self.check(got["status"] == 200, f"GET /v1/networks/{nwid} answered {got}")
        self.check(got["body"]["name"] == "panel-test", f"the API has the network as {got['body']!r}")
        self.check(f"#/networks/{nwid}" in self.driver.current_url, f"URL is {self.driver.current_url}")
        self.nwid = nwid
        print(f"NWID {nwid}", flush=True)
        return nwid

    def s4_join(self):
        self.joined = []
        for cmd in self.args.join:
            cmd = cmd.replace("{nwid}", self.nwid)
            out = subprocess.run(cmd, shell=True, check=False, capture_output=True, text=True, timeout=30)
            if out.returncode != 0:
                raise Failed(f"join command failed ({out.returncode}): {cmd}\n{out.stdout}\n{out.stderr}")
            print(f"     join: {out.stdout.strip().splitlines()[0] if out.stdout.strip() else cmd}", flush=True)
            self.joined.append(out.stdout)
        n = len(self.args.join)
        rows = self.wait(
            f"{n} members waiting for authorization",
            15,
            lambda: (lambda r: r if len(r) == n and all(x["state"] == "waiting" for x in r) else None)(
                self.member_rows()
            ),
        )
        for r in rows:
            self.check(r["highlighted"], f"waiting member {r['node']} is not highlighted")
            self.check("waiting" in r["badge"], f"waiting member {r['node']} has badge {r['badge']!r}")
        # Node ids in the order of the joins (`meshd join` prints the node's id).
        ids = [r["node"] for r in rows]
        ordered = []
        for out in self.joined:
            found = [i for i in HEX10.findall(out) if i in ids and i not in ordered]
            if found:
                ordered.append(found[0])
        ordered += [i for i in ids if i not in ordered]
        self.nodes = ordered
        self.shot("members-waiting.png")
        return " ".join(self.nodes)

    def s5_authorize(self):
        for node in self.nodes:
            self.click(f'#members-body tr[data-node="{node}"] button.authorize')
        t0 = time.monotonic()

        def all_up():
            rows = {r["node"]: r for r in self.member_rows()}
            return all(
                n in rows
                and rows[n]["state"] == "authorized"
                and rows[n]["online"] == "true"
                and any(IPV4.fullmatch(a) for a in rows[n]["ipv4"])
                for n in self.nodes
            ) and rows

        rows = self.wait("both members authorized, online and with an IPv4 address", 5, all_up)
        took = time.monotonic() - t0
        for n in self.nodes:
            self.check(
                not self.js(f"return !!document.querySelector('#members-body tr[data-node=\"{n}\"] button.authorize')"),
                f"{n} still offers Authorize",
            )
        self.shot("members.png")
        return f"in {took:.1f} s: " + ", ".join(f"{n} {' '.join(rows[n]['ipv4'])}" for n in self.nodes)

    def s6_mesh_direct(self):
        a, b = self.nodes[0], self.nodes[1]
        found = self.wait(
            f"a direct link between {a} and {b} in the mesh picture",
            30,
            lambda: self.js(
                """
                const [a, b] = arguments;
                const l = Array.from(document.querySelectorAll('#mesh svg line.link')).find(
                  (l) => (l.dataset.a === a && l.dataset.b === b) || (l.dataset.a === b && l.dataset.b === a));
                return l && l.dataset.path === 'direct' && l.classList.contains('link-direct')
                  ? {path: l.dataset.path, direct: l.dataset.direct || null, rtt: l.dataset.rtt || null,
                     stroke: getComputedStyle(l).stroke} : null;
                """,
                a,
                b,
            ),
            interval=0.5,
        )
        circles = self.js(
            "return Array.from(document.querySelectorAll('#mesh svg circle[data-node]')).map((c) => c.dataset.node)"
        )
        self.check(set(self.nodes) <= set(circles), f"member circles {circles} lack {self.nodes}")
        self.js("document.getElementById('mesh').scrollIntoView({block: 'center'})")
        time.sleep(0.3)
        self.shot("mesh.png")
        return f"{found['path']} ({found['direct']}), rtt {found['rtt']} ms, stroke {found['stroke']}"

    def s7_rename(self):
        node = self.nodes[0]
        row = f'#members-body tr[data-node="{node}"]'
        self.click(f"{row} button.rename")
        field = self.wait(
            "the inline rename field",
            5,
            lambda: self.driver.find_element(By.CSS_SELECTOR, f"{row} input.rename-input"),
        )
        field.send_keys(Keys.CONTROL, "a")
        field.send_keys(Keys.DELETE)
        field.send_keys("panel-")
        # Two polls go by while the field is half typed: it must keep the text and stay
        # the same element.
        time.sleep(4.5)
        field.send_keys("renamed")
        value = field.get_attribute("value")
        self.check(value == "panel-renamed", f"the rename field holds {value!r} after polls: typing was lost")
        self.click(f"{row} button.save")
        self.wait(
            "the new name in the member's row",
            5,
            lambda: self.js(f"return (document.querySelector('{row} td.name .member-name') || {{}}).textContent")
            == "panel-renamed",
        )
        self.wait(
            "the new name in the mesh picture",
            10,
            lambda: self.js(
                "const t = document.querySelector('#mesh text.node-label[data-node=\"' + arguments[0] + '\"]');"
                "return t && t.textContent === 'panel-renamed';",
                node,
            ),
        )
        got = self.fetch("GET", f"/v1/networks/{self.nwid}/members", token=self.args.token)
        names = {m["node_id"]: m["name"] for m in got["body"]}
        self.check(names.get(node) == "panel-renamed", f"the API has the names {names}")
        return f"{node} is panel-renamed"

    def s8_route(self):
        target = "192.168.77.0/24"
        via = self.nodes[0]
        self.type_into("route-target", target)
        self.type_into("route-via", via)
        self.click("#route-add")
        row = f'#routes-body tr[data-route="{target}"]'
        self.wait(
            "the route in the list",
            5,
            lambda: via in (self.js(f"return (document.querySelector('{row}') || {{}}).textContent") or ""),
        )
        self.check(self.error_text() is None, f"an error shows after adding the route: {self.error_text()!r}")
        got = self.fetch("GET", f"/v1/networks/{self.nwid}/routes", token=self.args.token)
        self.check(any(r["target"] == target for r in got["body"]), f"the API lists routes {got['body']}")
        self.click(f"{row} button.remove")
        self.wait("the route gone from the list", 5, lambda: not self.js(f"return !!document.querySelector('{row}')"))
        got = self.fetch("GET", f"/v1/networks/{self.nwid}/routes", token=self.args.token)
        self.check(not any(r["target"] == target for r in got["body"]), f"the API still lists {got['body']}")
        return f"{target} via {via} added and removed"

    def s8b_egress(self):
        fact = """
            const dt = [...document.querySelectorAll('#net-facts dt')].find((d) => d.textContent === 'IPv6 egress');
            return dt ? dt.nextElementSibling.textContent : null;
        """
        self.check(self.js(fact) == "off", f"the IPv6 egress fact reads {self.js(fact)!r}")
        for want in ("nat66", "off"):
            self.click("#egress-toggle")
            self.wait(f"IPv6 egress {want} on the page", 5, lambda: self.js(fact) == want)
            got = self.fetch("GET", f"/v1/networks/{self.nwid}", token=self.args.token)
            self.check(got["body"]["ipv6_egress"] == want, f"the API has ipv6_egress {got['body'].get('ipv6_egress')!r}")
        return "turned on and off, the API agreeing"

    def s9_bad_route(self):
        target = "10.1.2.300/24"
        via = self.nodes[0]
        self.type_into("route-target", target)
        self.type_into("route-via", via)
        self.click("#route-add")
        shown = self.wait("the API's error in #error", 5, self.error_text)
        answer = self.fetch(
            "POST", f"/v1/networks/{self.nwid}/routes", token=self.args.token, body={"target": target, "via": via}
        )
        self.check(400 <= answer["status"] < 500, f"the API took the bad route: {answer}")
        want = answer["body"].get("error") if isinstance(answer["body"], dict) else None
        self.check(want, f"the API's answer has no error field: {answer!r}")
        self.check(shown == want, f"#error shows {shown!r}; the API says {want!r}")
        self.check("10.1.2.300" in shown, f"the error does not name the bad target: {shown!r}")
        self.check(
            self.js("return document.getElementById('route-target').value") == target,
            "the route form lost what was typed after the error",
        )
        self.shot("error.png")
        return repr(shown)

    def s10_same_origin(self):
        origin = self.js("return location.origin")
        names = self.js("return performance.getEntriesByType('resource').map((e) => e.name)")
        foreign = [n for n in names if not n.startswith(origin + "/")]
        self.check(not foreign, f"loaded from another origin: {foreign}")
        page = self.fetch("GET", "/")
        csp = page.get("csp") or ""
        self.check("default-src 'self'" in csp, f"GET / has Content-Security-Policy {csp!r}")
        problems = self.console_problems()
        self.check(not problems, "the console reports:\n  " + "\n  ".join(problems))
        return f"{len(names)} resources, all from {origin}; CSP {csp!r}"

    def s_replicas(self):
        self.driver.get(self.args.url + "/#/replicas")
        shown = self.wait(
            "the replicas page: a table of replicas or 'not replicated'",
            10,
            lambda: ("not replicated" if self.visible("replicas-none") else None)
            or (
                self.js("return document.querySelectorAll('#replicas-body tr[data-replica]').length")
                and self.visible("replicas-table")
                and "replicas"
            ),
        )
        self.shot("replicas.png")
        if shown == "replicas":
            return self.js(
                "return Array.from(document.querySelectorAll('#replicas-body tr')).map((t) => t.dataset.replica + ':' + t.dataset.role).join(' ')"
            )
        return shown

    def s11_phone(self):
        d = self.driver
        d.set_window_size(375, 800)
        d.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride", {"width": 375, "height": 800, "deviceScaleFactor": 1, "mobile": True}
        )
        widths = {}
        for name, hash_, ready in [
            ("network", f"#/networks/{self.nwid}", "members-body"),
            ("networks", "#/networks", "networks-body"),
            ("replicas", "#/replicas", None),
        ]:
            self.js("location.hash = arguments[0]", hash_)
            self.wait(f"the {name} page", 10, lambda: self.visible(f"page-{name}"))
            if ready:
                self.wait(f"the {name} table", 10, lambda: self.js(f"return document.getElementById('{ready}').children.length"))
            time.sleep(0.5)
            w = self.js("return [document.documentElement.scrollWidth, window.innerWidth]")
            widths[name] = w
            if name == "network":
                self.shot("phone.png")
            else:
                self.shot(f"phone-{name}.png")
            self.check(w[0] <= 375 + 1, f"the {name} page is {w[0]} px wide at 375 px (viewport {w[1]})")
        return ", ".join(f"{k} {v[0]} px" for k, v in widths.items())

    def s12_sign_out(self):
        self.wait("the sign-out button", 5, lambda: self.visible("sign-out"))
        self.click("#sign-out")
        self.wait("the sign-in page after signing out", 5, lambda: self.visible("token") and self.visible("sign-in"))
        self.check(self.js("return sessionStorage.length") == 0, "sessionStorage is not empty after signing out")
        self.driver.refresh()
        self.wait("the sign-in page after a reload", 10, lambda: self.visible("token"))
        self.check(not self.visible("page-networks"), "a reload after signing out shows the networks")

    def run(self):
        self.step(1, "sign-in page; a wrong token is refused; no token gets 401", self.s1_signin_page)
        self.step(2, "sign in with the token", self.s2_signin)
        self.step(3, "create the network panel-test", self.s3_create_network)
        self.step(4, "the nodes join and wait for authorization", self.s4_join)
        self.step(5, "authorize both: authorized, online, with IPv4", self.s5_authorize)
        self.step(6, "a direct link between them in the mesh picture", self.s6_mesh_direct)
        self.step(7, "rename a member inline", self.s7_rename)
        self.step(8, "add a route and remove it", self.s8_route)
        self.step("8b", "IPv6 egress (NAT66) on and off", self.s8b_egress)
        self.step(9, "a bad route shows the API's error", self.s9_bad_route)
        self.step(10, "everything from the same origin, under the CSP", self.s10_same_origin)
        self.step("10b", "the replicas page", self.s_replicas)
        self.step(11, "fits a 375 px phone", self.s11_phone)
        self.step(12, "sign out", self.s12_sign_out)

    def report_failure(self):
        try:
            self.shot("failure.png")
        except Exception as e:  # noqa: BLE001 - best effort
            print(f"     (no failure.png: {e})")
        try:
            print(f"     url: {self.driver.current_url}")
            print(f"     #error: {self.error_text()!r}")
            body = self.js("return document.body.innerText")
            print("     page text:\n       " + "\n       ".join((body or "").splitlines()[:60]))
            self.console_problems()
            for entry in getattr(self, "console", [])[-30:]:
                print(f"     console {entry.get('level')}: {entry.get('message')}")
        except Exception as e:  # noqa: BLE001 - best effort
            print(f"     (no page details: {e})")

    def close(self):
        try:
            self.driver.quit()
        except Exception:  # noqa: BLE001
            pass
        shutil.rmtree(self.profile, ignore_errors=True)


def main():
    args = parse_args()

    def on_alarm(_sig, _frame):
        raise Timeout(f"the run took longer than {args.deadline} s")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(args.deadline)
    t0 = time.monotonic()
    panel = None
    try:
        panel = Panel(args)
        panel.run()
    except Exception as e:  # noqa: BLE001 - every failure is reported the same way
        where = panel.step_name if panel else "starting Chromium"
        print(f"FAIL {where}: {e}", flush=True)
        if not isinstance(e, (Failed, Timeout)):
            traceback.print_exc(file=sys.stdout)
        if panel:
            signal.alarm(0)
            panel.report_failure()
        return 1
    finally:
        signal.alarm(0)
        if panel:
            panel.close()
    print(f"PASS all steps in {time.monotonic() - t0:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
