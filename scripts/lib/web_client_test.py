#!/usr/bin/python3
"""The chat's web client in headless Chromium, driven through Selenium.

Run by scripts/chat-web-demo.sh, which owns the server, a raw IRC client (nick
`raw`, already in the channel with HISTORY_COUNT earlier messages said) and
weechat. This driver opens two browser users, alice and bob (two separate
Chromium sessions, each logging in to its account with SASL PLAIN), and asks
the script for what only it can do through a line protocol: it writes one
request per line on stdout and reads one answer per line on stdin.

    SEND <irc line>        the raw client sends the line          -> OK
    EXPECT <regex>         the raw client waits for a line        -> OK <line>
    ON_SHARD alice         alice just registered (the script notes
                           her shard, to put weechat on another)  -> OK
    WEECHAT_START          weechat (nick wee) joins the channel,
                           on another shard than alice            -> OK <alice's shard> <weechat's shard>
    WEECHAT_SAY <text>     weechat says text in the channel       -> OK
    WEECHAT_SEEN <text>    weechat's log shows "nick<TAB>text"    -> OK
    SCREENSHOT_DONE        (information only)                     -> OK
    DONE                   the driver finished (no answer)

Any other answer than OK... makes the driver fail. Every wait is bounded by
--wait seconds. Exits non-zero with a message on the first failed check; the
browsers are closed in every case (also on SIGTERM).
"""

import argparse
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.actions.wheel_input import ScrollOrigin
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait


def log(msg):
    print(f"web-driver: {msg}", file=sys.stderr, flush=True)


class Failed(Exception):
    pass


def request(line):
    """Asks the calling script for something; returns its answer."""
    print(line, flush=True)
    answer = sys.stdin.readline()
    if not answer:
        raise Failed(f"the script went away while asked: {line}")
    answer = answer.rstrip("\n")
    if not answer.startswith("OK"):
        raise Failed(f"the script answered {answer!r} to {line!r}")
    return answer[3:]


class Browser:
    """One browser user: a Chromium session of its own."""

    def __init__(self, name, args):
        self.name = name
        self.wait_s = args.wait
        self.profile = tempfile.mkdtemp(prefix=f"web-{name}-")
        opts = Options()
        opts.binary_location = args.chromium
        for a in (
            "--headless=new",
            "--no-sandbox",  # CI runs as root
            "--disable-dev-shm-usage",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--window-size=1280,860",
            f"--user-data-dir={self.profile}",
        ):
            opts.add_argument(a)
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.d = webdriver.Chrome(service=Service(args.chromedriver), options=opts)
        self.d.set_page_load_timeout(args.wait)
        self.console = []
        # Console errors a check caused on purpose (substrings).
        self.expected_errors = []

    def quit(self):
        try:
            self.d.quit()
        except Exception as e:  # already gone
            log(f"{self.name}: quit: {e}")
        shutil.rmtree(self.profile, ignore_errors=True)

    # -- waiting and reading the page ------------------------------------------

    def until(self, what, fn):
        try:
            return WebDriverWait(self.d, self.wait_s, poll_frequency=0.1).until(lambda d: fn())
        except TimeoutException:
            raise Failed(f"{self.name}: timed out waiting for {what}") from None

    def js(self, script, *args):
        return self.d.execute_script(script, *args)

    def messages(self):
        """The active buffer's messages: [{from, text, kind, msgid, time}]."""
        return self.js(
            """return [...document.querySelectorAll('#message-list [data-test=message]')].map(e => ({
                from: e.dataset.from || '', kind: e.dataset.kind, msgid: e.dataset.msgid || '',
                text: e.querySelector('[data-test=text]').textContent,
                time: e.querySelector('time').getAttribute('datetime')}));"""
        )

    def texts(self, kinds=("privmsg", "action", "notice")):
        return [(m["from"], m["text"]) for m in self.messages() if m["kind"] in kinds]

    def active_buffer(self):
        return self.js("const b = document.querySelector('[data-test=buffer][aria-current=page]'); return b && b.dataset.buffer;")

    def buffers(self):
        """{name: unread count} of the sidebar."""
        return self.js(
            """const r = {}; document.querySelectorAll('#buffers li').forEach(li => {
                r[li.querySelector('[data-test=buffer]').dataset.buffer] = Number(li.dataset.unread); }); return r;"""
        )

    def nicks(self):
        return self.js("return [...document.querySelectorAll('#nicklist [data-test=nick]')].map(e => e.dataset.prefix + e.dataset.nick);")

    def scroll_up(self):
        """Scrolls the message view up as a mouse wheel does."""
        view = self.d.find_element(By.ID, "messages")
        ActionChains(self.d).scroll_from_origin(ScrollOrigin.from_element(view), 0, -20000).perform()

    def collect_console(self):
        self.console += self.d.get_log("browser")

    # -- acting --------------------------------------------------------------------

    def login(self, url, nick, channel, account, password):
        self.d.get(url)
        self.until("the login form", lambda: self.d.find_element(By.ID, "connect").is_displayed())
        self.d.find_element(By.ID, "nick").send_keys(nick)
        self.d.find_element(By.ID, "channels").send_keys(channel)
        self.d.find_element(By.ID, "account").send_keys(account)
        self.d.find_element(By.ID, "password").send_keys(password)
        self.d.find_element(By.ID, "connect").click()
        self.until(f"{channel} to open", lambda: self.active_buffer() == channel)
        self.until(
            "the connection status 'connected'",
            lambda: self.d.find_element(By.ID, "conn-status").get_attribute("data-state") == "connected",
        )

    def type(self, text):
        box = self.d.find_element(By.ID, "input")
        box.send_keys(text)
        box.send_keys(Keys.ENTER)

    def open_buffer(self, name):
        self.d.find_element(By.CSS_SELECTOR, f"[data-test=buffer][data-buffer={json.dumps(name)}]").click()
        self.until(f"buffer {name} to be shown", lambda: self.active_buffer() == name)

    def sees(self, sender, text):
        self.until(f"<{sender}> {text!r} in {self.active_buffer()}", lambda: (sender, text) in self.texts())


def check(cond, msg):
    if not cond:
        raise Failed(msg)


PARSE_CASES = [
    (
        r"@time=2020-01-01T00:00:00.000Z;+x=a\:b\sc\\d\ :nick!u@h PRIVMSG #chan :hello :world ",
        {"tags": {"time": "2020-01-01T00:00:00.000Z", "+x": "a;b c\\d"}, "nick": "nick", "command": "PRIVMSG",
         "params": ["#chan", "hello :world "]},
    ),
    (":srv 005 me A=1 B :are supported", {"tags": {}, "nick": "srv", "command": "005", "params": ["me", "A=1", "B", "are supported"]}),
    ("PING x", {"tags": {}, "nick": "", "command": "PING", "params": ["x"]}),
    (":n!u@h  PRIVMSG  #c  :", {"tags": {}, "nick": "n", "command": "PRIVMSG", "params": ["#c", ""]}),
    ("@k;=v ping :x\r\n", {"tags": {"k": ""}, "nick": "", "command": "PING", "params": ["x"]}),
]


def check_parser(b):
    """The page's IRC line parser and builder on tricky input."""
    for line, want in PARSE_CASES:
        got = b.js("const m = window.shardlineChat.parseLine(arguments[0]);"
                   "return {tags: m.tags, nick: m.nick, command: m.command, params: m.params};", line)
        check(got == want, f"parseLine({line!r}) = {got}, want {want}")
    built = b.js("return window.shardlineChat.buildLine('PRIVMSG', '#c', arguments[0]);", "a\r\nQUIT :x")
    check(built == "PRIVMSG #c :a  QUIT :x", f"buildLine let a line break through: {built!r}")
    check(b.js("return window.shardlineChat.buildLine('PRIVMSG', '#c', ':)');") == "PRIVMSG #c ::)", "buildLine(':)')")
    pieces = b.js("return window.shardlineChat.splitText('é'.repeat(1000), 400);")
    check("".join(pieces) == "é" * 1000 and all(len(p.encode()) <= 400 for p in pieces), "splitText of 2000 bytes")
    links = b.js(
        "return window.shardlineChat.linkify(arguments[0]).map(n => n.nodeName === 'A' ? ['A', n.href, n.textContent] : ['T', n.textContent]);",
        "see javascript:alert(1) and http://a.example/x?y=<b>z</b>.",
    )
    want = [["T", "see javascript:alert(1) and "], ["A", "http://a.example/x?y=", "http://a.example/x?y="], ["T", "<b>z</b>."]]
    check(links == want, f"linkify: {links}, want {want}")
    log("the page's line parser, builder, splitter and linkifier pass their checks")


def upload_file(args, alice, bob, ch):
    """alice uploads ~200 KB of random bytes through the Upload control; the link
    she sends reaches bob and raw, and fetching it gives the same bytes back."""
    check(alice.d.find_element(By.ID, "upload").is_displayed(), "alice (logged in) has no Upload button")
    data = os.urandom(200 * 1024 + 17)
    # Chromium reads a chosen file when it sends it, not when it is chosen: the
    # file stays on disk until the link has come back (removing it at once made
    # the page's POST fail with net::ERR_FILE_NOT_FOUND now and then).
    #
    # The page uploads with this session's token (FILEHOST TOKEN), never the
    # password. The first POST's token is spoiled on its way out: the server
    # must answer 401 and the page must fetch a new token and try again.
    alice.js(
        "window.__auth = [];"
        "const real = window.fetch;"
        "window.fetch = function (url, opts) {"
        "  const a = (opts && opts.headers && opts.headers.Authorization) || '';"
        "  window.__auth.push(a);"
        "  if (window.__auth.length === 1) {"
        "    opts = Object.assign({}, opts, { headers: Object.assign({}, opts.headers, { Authorization: a + 'x' }) });"
        "  }"
        "  return real.call(this, url, opts);"
        "};"
    )
    alice.expected_errors.append("the server responded with a status of 401")
    tmp = tempfile.mkdtemp(prefix="web-upload-")
    try:
        path = os.path.join(tmp, "random data.bin")
        with open(path, "wb") as f:
            f.write(data)
        alice.d.find_element(By.CSS_SELECTOR, "[data-test=upload-input]").send_keys(path)
        check_upload(args, alice, bob, ch, data)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    auth = alice.js("return window.__auth;")
    check(
        len(auth) == 2 and all(a.startswith("Bearer ") for a in auth),
        f"the page's upload Authorization headers: {[a[:12] + '…' for a in auth]}",
    )
    log("the upload went with the session's token (Bearer); a refused token was replaced and the upload retried")


def check_upload(args, alice, bob, ch, data):
    link_re = re.compile(r"^https?://[^ ]+/files/[^ /]+/random_data\.bin$")

    def link_from(b):
        for f, t in b.texts(("privmsg",)):
            if f == "alice" and link_re.match(t):
                return t
        return None

    url = bob.until("alice's upload link", lambda: link_from(bob))
    check(link_from(alice) == url, f"alice does not see her own link {url}")
    got = request(f"EXPECT ^(@[^ ]+ )?:alice![^ ]+ PRIVMSG {re.escape(ch)} :{re.escape(url)}$")
    check(got.endswith(url), f"raw got {got!r}")
    href = bob.js(
        "const a = [...document.querySelectorAll('#message-list a[data-test=link]')].find(a => a.textContent === arguments[0]);"
        "return a && [a.href, a.rel];",
        url,
    )
    check(href and href[0] == url and "noopener" in href[1], f"the link in bob's page is {href}")
    with urllib.request.urlopen(url, timeout=args.wait) as resp:
        body = resp.read()
        nosniff = resp.headers.get("X-Content-Type-Options")
    check(body == data, f"the download is {len(body)} bytes, not the {len(data)} uploaded")
    check(nosniff == "nosniff", f"X-Content-Type-Options: {nosniff!r}")
    log(f"alice uploaded {len(data)} bytes through the Upload control; bob and raw got {url}, which serves the same bytes (nosniff)")


def run(args, browsers):
    ch = args.channel
    n_hist = args.history_count
    hist = [f"history {i:03d}" for i in range(1, n_hist + 1)]

    # --- two browser users join the channel the raw client is in --------------
    alice = Browser("alice", args)
    browsers.append(alice)
    alice.login(args.url, "alice", ch, "alice", args.alice_password)
    request("ON_SHARD alice")  # the script notes where alice registered
    bob = Browser("bob", args)
    browsers.append(bob)
    bob.login(args.url, "bob", ch, "bob", args.bob_password)
    request(f"EXPECT ^:bob![^ ]+ JOIN {re.escape(ch)}")
    alice.until("bob in alice's nick list", lambda: "bob" in alice.nicks())
    for b in (alice, bob):
        b.until(f"raw, alice and bob in {b.name}'s nick list", lambda b=b: {"@raw", "alice", "bob"} <= set(b.nicks()))
    log(f"alice and bob joined {ch}; nick list {alice.nicks()}")
    check_parser(alice)

    # --- history: CHATHISTORY LATEST on join, BEFORE on scrolling up ------------
    alice.until("the latest history", lambda: ("raw", hist[-1]) in alice.texts())
    first_page = [t for f, t in alice.texts() if t.startswith("history ")]
    check(0 < len(first_page) < n_hist, f"alice's first page of history holds {len(first_page)} of {n_hist} messages")
    check(hist[0] not in first_page, "the start of the history is there before any scrolling")
    check(first_page == hist[-len(first_page):], f"the first page is not the latest messages in order: {first_page[:3]}…")
    check(all(m["msgid"] for m in alice.messages() if m["text"].startswith("history ")), "history lines without msgid")
    log(f"on join alice's view holds the latest {len(first_page)} of {n_hist} earlier messages")
    scrolls = 0
    deadline = time.monotonic() + args.wait
    while ("raw", hist[0]) not in alice.texts():
        check(time.monotonic() < deadline, f"scrolling up never loaded {hist[0]!r} ({scrolls} scrolls)")
        alice.scroll_up()
        scrolls += 1
        time.sleep(0.3)
    got = [t for f, t in alice.texts() if t.startswith("history ")]
    check(got == hist, f"after scrolling alice's history is {len(got)} lines, not {hist[0]}…{hist[-1]} in order")
    # One more page up finds nothing older: the view says so and asks no more.
    alice.until(
        "the history status 'start of history'",
        lambda: alice.scroll_up() or alice.js("return document.getElementById('history-status').dataset.state;") == "done",
    )
    got = [t for f, t in alice.texts() if t.startswith("history ")]
    check(got == hist, "the last page up changed the history")
    log(f"scrolling to the top loaded older history ({scrolls} scrolls): all {n_hist} messages, in order, once")
    alice.js("const v = document.getElementById('messages'); v.scrollTop = v.scrollHeight;")

    # --- channel messages between the three -------------------------------------
    request(f"SEND PRIVMSG {ch} :hello browsers, from an IRC socket")
    for b in (alice, bob):
        b.sees("raw", "hello browsers, from an IRC socket")
    alice.type("hello from alice's browser <b>not bold</b> & ok")
    bob.sees("alice", "hello from alice's browser <b>not bold</b> & ok")
    alice.sees("alice", "hello from alice's browser <b>not bold</b> & ok")
    check(
        bob.js("return document.querySelectorAll('#message-list b').length") == 0,
        "alice's text became markup in bob's page",
    )
    request(f"EXPECT ^(@[^ ]+ )?:alice![^ ]+ PRIVMSG {re.escape(ch)} :hello from alice's browser <b>not bold</b> & ok$")
    bob.type("/me waves from bob's browser")
    alice.until("bob's action", lambda: ("bob", "waves from bob's browser") in alice.texts(("action",)))
    request(f"EXPECT ^(@[^ ]+ )?:bob![^ ]+ PRIVMSG {re.escape(ch)} :\x01ACTION waves from bob's browser\x01$")
    own = [t for f, t in alice.texts() if f == "alice"]
    check(own.count("hello from alice's browser <b>not bold</b> & ok") == 1, f"alice sees her own message {own} (want once)")
    log("channel messages: raw -> both browsers, alice -> bob and raw, bob's /me -> alice and raw")

    # --- private messages between the browser users, and from the IRC client ----
    alice.type("/msg bob psst bob, privately")
    alice.until("/msg to open a conversation with bob", lambda: alice.active_buffer() == "bob")
    alice.sees("alice", "psst bob, privately")
    bob.until("an unread mark on bob's conversation with alice", lambda: bob.buffers().get("alice", 0) >= 1)
    check(bob.active_buffer() == ch, "a private message took bob away from the channel")
    bob.open_buffer("alice")
    bob.sees("alice", "psst bob, privately")
    check(bob.buffers().get("alice") == 0, "the unread mark stayed after opening the conversation")
    bob.type("hi alice, privately")
    alice.sees("bob", "hi alice, privately")
    request("SEND PRIVMSG alice :raw to alice, privately")
    alice.until("a conversation with raw", lambda: "raw" in alice.buffers())
    alice.open_buffer("raw")
    alice.sees("raw", "raw to alice, privately")
    alice.type("alice to raw, privately")
    request("EXPECT ^(@[^ ]+ )?:alice![^ ]+ PRIVMSG raw :alice to raw, privately$")
    log("private messages: alice <-> bob (unread mark, conversation window), raw <-> alice")

    # --- channel operator and topic ---------------------------------------------
    alice.open_buffer(ch)
    bob.open_buffer(ch)
    request(f"SEND MODE {ch} +o bob")
    for b in (alice, bob):
        b.until(f"@bob in {b.name}'s nick list", lambda b=b: "@bob" in b.nicks())
    bob.type("/topic Shardline's web client, weechat and IRC across shards")
    for b in (alice, bob):
        b.until(
            f"the topic in {b.name}'s view",
            lambda b=b: "Shardline's web client, weechat and IRC across shards" in b.d.find_element(By.ID, "topic").text,
        )
    request(f"EXPECT ^:bob![^ ]+ TOPIC {re.escape(ch)} :Shardline's web client")
    log("MODE +o shows @bob in the nick lists; bob's /topic reaches alice and raw")

    # --- weechat, and the screenshot -------------------------------------------
    alice_shard, wee_shard = request("WEECHAT_START").split()
    alice.until("wee in alice's nick list", lambda: "wee" in alice.nicks())
    alice.type(f"hi weechat, this is alice in Chromium, on shard {alice_shard}")
    request(f"WEECHAT_SEEN alice\thi weechat, this is alice in Chromium, on shard {alice_shard}")
    request(f"WEECHAT_SAY hello alice, this is weechat, on shard {wee_shard}")
    alice.sees("wee", f"hello alice, this is weechat, on shard {wee_shard}")
    bob.sees("wee", f"hello alice, this is weechat, on shard {wee_shard}")
    alice.type("/me waves at weechat")
    request("WEECHAT_SEEN  *\talice waves at weechat")
    alice.js("const v = document.getElementById('messages'); v.scrollTop = v.scrollHeight;")
    time.sleep(0.3)
    if args.screenshot:
        check(alice.d.save_screenshot(args.screenshot), "the screenshot was not saved")
        request("SCREENSHOT_DONE")
        log(f"screenshot of alice talking with weechat: {args.screenshot}")

    # --- a line longer than one IRC message: several messages, cut between words
    long_words = [f"word{i:04d}" for i in range(90)]  # 899 bytes with spaces
    alice.type(" ".join(long_words))
    bob.until(
        "alice's long line, in pieces",
        lambda: sum((t.split(" ") for f, t in bob.texts() if f == "alice" and t.startswith("word")), []) == long_words,
    )
    check(len([t for f, t in bob.texts() if t.startswith("word")]) >= 3, "the long line was not split")
    request(f"EXPECT ^(@[^ ]+ )?:alice![^ ]+ PRIVMSG {re.escape(ch)} :word0000 ")
    log("a line of 899 bytes went out as several messages, cut between words")

    # --- file upload (soju.im/FILEHOST): the link reaches bob and raw --------------
    upload_file(args, alice, bob, ch)

    # --- nick change, quit and reconnect --------------------------------------
    bob.type("/nick bobby")
    alice.until("bob's new nick in the nick list", lambda: "bobby" in [n.lstrip("@+") for n in alice.nicks()])
    check("bob" not in [n.lstrip("@+") for n in alice.nicks()], "bob's old nick stayed in the nick list")
    bob.type("/quit bob-bye")
    bob.until("bob's reconnect button", lambda: bob.d.find_element(By.ID, "reconnect").is_displayed())
    alice.until("bobby to leave the nick list", lambda: "bobby" not in [n.lstrip("@+") for n in alice.nicks()])
    request("EXPECT ^:bobby![^ ]+ QUIT :Quit: bob-bye$")
    bob.d.find_element(By.ID, "reconnect").click()
    bob.until("bob back in the channel", lambda: bob.d.find_element(By.ID, "conn-status").get_attribute("data-state") == "connected")
    alice.until("bob back in alice's nick list", lambda: "bob" in [n.lstrip("@+") for n in alice.nicks()])
    bob.until("alice in bob's nick list after the reconnect", lambda: "alice" in [n.lstrip("@+") for n in bob.nicks()])
    log("nick change, /quit, the reconnect button (rejoins the channel)")
    bob.type("/quit bob-bye-2")
    alice.type("/quit alice-bye")
    for b in (alice, bob):
        b.until(f"{b.name}'s reconnect button", lambda b=b: b.d.find_element(By.ID, "reconnect").is_displayed())

    # --- a fresh browser for alice: what was said comes from CHATHISTORY --------
    again = Browser("alice-again", args)
    browsers.append(again)
    again.login(args.url, "alice", ch, "alice", args.alice_password)
    again.sees("wee", f"hello alice, this is weechat, on shard {wee_shard}")
    check(("raw", hist[0]) not in again.texts(), "a fresh view holds more than the latest page")
    again.type("/query bob")
    again.until("the conversation with bob", lambda: again.active_buffer() == "bob")
    again.sees("alice", "psst bob, privately")
    again.sees("bob", "hi alice, privately")
    log("a fresh browser logged in as alice got the channel's and the conversation with bob's history")
    again.type("/quit alice-again")
    again.until("the reconnect button", lambda: again.d.find_element(By.ID, "reconnect").is_displayed())

    for b in (alice, bob, again):
        b.collect_console()
        errors = [
            e
            for e in b.console
            if e.get("level") == "SEVERE" and not any(x in e.get("message", "") for x in b.expected_errors)
        ]
        check(not errors, f"{b.name}'s browser console shows errors: {errors}")
    log("no errors in any browser's console")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True)
    p.add_argument("--channel", required=True)
    p.add_argument("--history-count", type=int, required=True)
    p.add_argument("--alice-password", required=True)
    p.add_argument("--bob-password", required=True)
    p.add_argument("--screenshot", default="")
    p.add_argument("--wait", type=float, default=20)
    p.add_argument("--chromium", default="/usr/bin/chromium")
    p.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    args = p.parse_args()

    def on_signal(signum, _frame):
        raise Failed(f"stopped by signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    browsers = []
    ok = False
    try:
        run(args, browsers)
        ok = True
    except Failed as e:
        log(f"FAIL: {e}")
    except WebDriverException as e:
        log(f"FAIL: WebDriver: {e.msg}")
    finally:
        for b in browsers:
            try:
                b.collect_console()
                for e in [] if ok else b.console:
                    log(f"{b.name} console: {e.get('level')} {e.get('message')}")
            except Exception:
                pass
            b.quit()
    if ok:
        print("DONE", flush=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
