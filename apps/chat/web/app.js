// shardline chat: a dependency-free IRC client over WebSocket (IRCv3
// `text.ircv3.net`: one IRC line per WebSocket text message, no CRLF).
//
// Everything a user or the server supplies reaches the page through
// textContent or attributes, never innerHTML.
//
// Layout of the state: `buffers` maps a casefolded name to a buffer (the
// server buffer "*", channels, private conversations); each buffer keeps its
// messages sorted by time, de-duplicated by msgid, and the view shows the
// active one. History comes from draft/chathistory: `CHATHISTORY LATEST` on
// join (and when a conversation opens), `CHATHISTORY BEFORE` when the view is
// scrolled to the top.
//
// File upload (soju.im/FILEHOST): when the server advertises
// `soju.im/FILEHOST=<url>` and the user logged in to an account, an Upload
// button POSTs the chosen file to that URL with `Authorization: Bearer` and
// this session's token (`FILEHOST TOKEN` over IRC; the password never goes
// over HTTP); the answer's Location is sent to the open channel or
// conversation. A 401 (the token's session or process is gone) fetches a new
// token and tries once more. http(s) URLs in messages become links (created <a> elements).
"use strict";

(function () {
  const WANTED_CAPS = [
    "server-time",
    "message-tags",
    "batch",
    "draft/chathistory",
    "echo-message",
    "multi-prefix",
    "sasl",
  ];
  const HISTORY_PAGE = 50;
  const MAX_TEXT_BYTES = 400;
  const MAX_MESSAGES_PER_BUFFER = 5000;
  const SERVER_BUFFER = "*";

  // ---- IRC line parsing and building --------------------------------------

  function unescapeTagValue(v) {
    let out = "";
    for (let i = 0; i < v.length; i++) {
      const c = v[i];
      if (c !== "\\") {
        out += c;
        continue;
      }
      i++;
      if (i >= v.length) break; // a lone trailing backslash is dropped
      const e = v[i];
      out += e === ":" ? ";" : e === "s" ? " " : e === "r" ? "\r" : e === "n" ? "\n" : e;
    }
    return out;
  }

  // parseLine("@a=b :nick!u@h PRIVMSG #c :hi") →
  // {tags: {a: "b"}, source: "nick!u@h", nick: "nick", command: "PRIVMSG", params: ["#c", "hi"]}
  function parseLine(raw) {
    let line = raw.replace(/[\r\n]+$/, "");
    let pos = 0;
    const msg = { tags: {}, source: "", nick: "", command: "", params: [], raw: line };
    const skipSpaces = () => {
      while (line[pos] === " ") pos++;
    };
    const word = () => {
      const end = line.indexOf(" ", pos);
      const w = end === -1 ? line.slice(pos) : line.slice(pos, end);
      pos = end === -1 ? line.length : end;
      return w;
    };
    skipSpaces();
    if (line[pos] === "@") {
      pos++;
      for (const tag of word().split(";")) {
        if (!tag) continue;
        const eq = tag.indexOf("=");
        const key = eq === -1 ? tag : tag.slice(0, eq);
        if (!key) continue;
        msg.tags[key] = eq === -1 ? "" : unescapeTagValue(tag.slice(eq + 1));
      }
      skipSpaces();
    }
    if (line[pos] === ":") {
      pos++;
      msg.source = word();
      const bang = msg.source.indexOf("!");
      const at = msg.source.indexOf("@");
      msg.nick = bang !== -1 ? msg.source.slice(0, bang) : at !== -1 ? msg.source.slice(0, at) : msg.source;
      skipSpaces();
    }
    msg.command = word().toUpperCase();
    while (pos < line.length) {
      skipSpaces();
      if (pos >= line.length) break;
      if (line[pos] === ":") {
        msg.params.push(line.slice(pos + 1));
        break;
      }
      msg.params.push(word());
    }
    return msg;
  }

  // buildLine("PRIVMSG", "#c", "hi there") → "PRIVMSG #c :hi there"
  function buildLine(command, ...params) {
    const parts = [command];
    params.forEach((p, i) => {
      p = String(p).replace(/[\r\n\0]/g, " ");
      const last = i === params.length - 1;
      if (last && (p === "" || p.includes(" ") || p[0] === ":")) parts.push(":" + p);
      else parts.push(p);
    });
    return parts.join(" ");
  }

  // Splits text into pieces of at most `max` UTF-8 bytes, at word boundaries
  // when it can.
  function splitText(text, max) {
    const enc = new TextEncoder();
    if (enc.encode(text).length <= max) return [text];
    const out = [];
    let cur = "";
    let bytes = 0;
    for (const ch of text) {
      const n = enc.encode(ch).length;
      if (bytes + n > max) {
        const cut = cur.lastIndexOf(" ");
        if (cut > cur.length / 2) {
          out.push(cur.slice(0, cut));
          cur = cur.slice(cut + 1);
        } else {
          out.push(cur);
          cur = "";
        }
        bytes = enc.encode(cur).length;
      }
      cur += ch;
      bytes += n;
    }
    if (cur) out.push(cur);
    return out;
  }

  function base64Utf8(s) {
    let bin = "";
    for (const b of new TextEncoder().encode(s)) bin += String.fromCharCode(b);
    return btoa(bin);
  }

  // ---- state ----------------------------------------------------------------

  const state = {
    ws: null,
    settings: null, // {nick, account, password, channels}
    nick: "",
    registered: false,
    caps: new Set(), // enabled
    offered: new Map(), // name -> value
    isupport: new Map(),
    prefixModes: "ov",
    prefixChars: "@+",
    chanTypes: "#&",
    chanModes: ["beI", "k", "l", "imnpst"],
    casemapping: "rfc1459",
    buffers: new Map(),
    order: [], // buffer keys in sidebar order
    active: SERVER_BUFFER,
    batches: new Map(), // ref -> {type, params, messages}
    pendingNames: new Map(), // channel key -> Map(nick -> prefixes)
    nickAttempt: 0,
    saslDone: false,
    loggedIn: false, // SASL succeeded on this connection
    uploadToken: null, // {token, until (ms)}: this connection's FILEHOST token
    tokenWaiters: [], // {resolve, reject} of requests for a token
    userClosed: false,
    sent: [], // what the user typed, for Up/Down
    sentPos: 0,
  };

  function fold(name) {
    let s = name.toLowerCase();
    if (state.casemapping !== "ascii") {
      s = s.replace(/[[\]\\~]/g, (c) => ({ "[": "{", "]": "}", "\\": "|", "~": "^" })[c]);
    }
    return s;
  }
  const isChannel = (name) => name.length > 0 && state.chanTypes.includes(name[0]);
  const sameNick = (a, b) => fold(a) === fold(b);

  function getBuffer(name, create) {
    const key = name === SERVER_BUFFER ? SERVER_BUFFER : fold(name);
    let b = state.buffers.get(key);
    if (!b && create) {
      b = {
        key,
        name,
        kind: name === SERVER_BUFFER ? "server" : isChannel(name) ? "channel" : "query",
        messages: [],
        msgids: new Set(),
        members: new Map(), // folded nick -> {nick, prefixes}
        topic: "",
        joined: false,
        unread: 0,
        highlight: false,
        historyLoading: false,
        historyDone: false,
        historyRequested: false,
        scrollTop: null,
      };
      state.buffers.set(key, b);
      state.order.push(key);
      renderBufferList();
    }
    return b;
  }

  // ---- DOM helpers ----------------------------------------------------------

  const $ = (id) => document.getElementById(id);
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") e.className = v;
      else if (k.startsWith("data-")) e.setAttribute(k, v);
      else if (k === "text") e.textContent = v;
      else e.setAttribute(k, v);
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c);
    return e;
  }

  function timeLabel(d) {
    const pad = (n) => String(n).padStart(2, "0");
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  // ---- the view ---------------------------------------------------------------

  function renderBufferList() {
    const list = $("buffers");
    list.replaceChildren();
    const sorted = [...state.order].sort((a, b) => {
      const ba = state.buffers.get(a);
      const bb = state.buffers.get(b);
      const rank = (x) => (x.kind === "server" ? 0 : x.kind === "channel" ? 1 : 2);
      return rank(ba) - rank(bb) || (a < b ? -1 : a > b ? 1 : 0);
    });
    for (const key of sorted) {
      const b = state.buffers.get(key);
      const label = b.kind === "server" ? state.isupport.get("NETWORK") || "server" : b.name;
      const button = el(
        "button",
        {
          type: "button",
          class: "buffer-button",
          "data-test": "buffer",
          "data-buffer": b.name,
          "aria-current": key === state.active ? "page" : null,
        },
        el("span", { class: "buffer-name", text: label }),
      );
      if (b.unread > 0) {
        button.append(
          el("span", {
            class: "unread" + (b.highlight ? " highlight" : ""),
            "data-test": "unread",
            "aria-label": `${b.unread} unread`,
            text: String(b.unread),
          }),
        );
      }
      button.addEventListener("click", () => switchTo(key));
      const li = el("li", { class: "buffer " + b.kind, "data-unread": String(b.unread) }, button);
      if (b.kind !== "server") {
        const close = el("button", {
          type: "button",
          class: "buffer-close",
          "data-test": "buffer-close",
          "aria-label": `Close ${b.name}`,
          title: b.kind === "channel" ? "Leave" : "Close",
          text: "×",
        });
        close.addEventListener("click", () => closeBuffer(b));
        li.append(close);
      }
      list.append(li);
    }
  }

  function switchTo(key) {
    const old = state.buffers.get(state.active);
    if (old) old.scrollTop = $("messages").scrollTop;
    state.active = key;
    const b = state.buffers.get(key);
    b.unread = 0;
    b.highlight = false;
    renderBufferList();
    renderMessages(true);
    renderNicklist();
    renderTopic();
    $("input").focus();
  }

  function renderTopic() {
    const b = state.buffers.get(state.active);
    const text = !b || b.kind === "server" ? "" : b.kind === "channel" && b.topic ? `${b.name} — ${b.topic}` : b.name;
    $("topic").textContent = text;
  }

  function messageNode(m) {
    const li = el("li", {
      class: "msg " + m.kind + (m.self ? " self" : ""),
      "data-test": "message",
      "data-msgid": m.msgid || null,
      "data-from": m.from || null,
      "data-kind": m.kind,
    });
    li.append(el("time", { class: "ts", datetime: m.time.toISOString(), title: m.time.toLocaleString(), text: timeLabel(m.time) }));
    if (m.kind === "privmsg" || m.kind === "notice") {
      li.append(el("span", { class: "from", "data-test": "from", text: m.kind === "notice" ? `-${m.from}-` : m.from }));
    } else if (m.kind === "action") {
      li.append(el("span", { class: "from", "data-test": "from", text: `* ${m.from}` }));
    } else {
      li.append(el("span", { class: "from", text: "--" }));
    }
    li.append(el("span", { class: "text", "data-test": "text" }, ...linkify(m.text)));
    return li;
  }

  // Text and <a> nodes for `text`: http(s) URLs become links, the rest text.
  const URL_RE = /\bhttps?:\/\/[^\s<>"]+/gi;
  function linkify(text) {
    const out = [];
    let last = 0;
    for (const m of text.matchAll(URL_RE)) {
      let url = m[0].replace(/[.,;:!?)\]}'*]+$/, "");
      let href;
      try {
        href = new URL(url);
      } catch (e) {
        continue;
      }
      if (href.protocol !== "http:" && href.protocol !== "https:") continue;
      if (m.index > last) out.push(document.createTextNode(text.slice(last, m.index)));
      out.push(el("a", { href: href.href, target: "_blank", rel: "noopener noreferrer", "data-test": "link", text: url }));
      last = m.index + url.length;
    }
    if (last < text.length) out.push(document.createTextNode(text.slice(last)));
    return out;
  }

  // ---- file upload (soju.im/FILEHOST) -------------------------------------------

  function uploadUrl() {
    const s = state.settings;
    const url = state.isupport.get("SOJU.IM/FILEHOST");
    if (!url || !s || !s.account || !state.loggedIn) return "";
    return url;
  }

  // This connection's upload token, asked for over IRC when there is none
  // good for another minute.
  function uploadToken(fresh) {
    const t = state.uploadToken;
    if (!fresh && t && t.until - Date.now() > 60000) return Promise.resolve(t.token);
    state.uploadToken = null;
    return new Promise((resolve, reject) => {
      const waiter = { resolve, reject };
      if (state.tokenWaiters.push(waiter) === 1) send("FILEHOST TOKEN");
      setTimeout(() => {
        const i = state.tokenWaiters.indexOf(waiter);
        if (i === -1) return;
        state.tokenWaiters.splice(i, 1);
        reject(new Error("the server did not answer FILEHOST TOKEN"));
      }, 10000);
    });
  }
  function settleTokenWaiters(token, error) {
    const waiters = state.tokenWaiters;
    state.tokenWaiters = [];
    for (const w of waiters) token ? w.resolve(token) : w.reject(error);
  }

  // The Upload button is there only when an upload can work.
  function renderUpload() {
    const on = !!uploadUrl();
    $("upload").hidden = !on;
    $("upload-input").disabled = !on;
  }

  // A file name as an ASCII header value may carry it (the server sanitizes
  // it again).
  function uploadName(name) {
    const n = name.replace(/[^A-Za-z0-9._-]/g, "_").replace(/^\.+/, "");
    return n || "file";
  }

  async function uploadFile(file) {
    const url = uploadUrl();
    const b = state.buffers.get(state.active);
    if (!b) return;
    if (!url) {
      info(b, "Upload is not available (it needs the server's file host and an account login).");
      return;
    }
    if (b.kind === "server") {
      info(b, "Open a channel or conversation to upload a file to it.");
      return;
    }
    info(b, `Uploading ${file.name} (${file.size} bytes)…`);
    let resp;
    try {
      for (let attempt = 0; attempt < 2; attempt++) {
        const token = await uploadToken(attempt > 0);
        resp = await fetch(url, {
          method: "POST",
          headers: {
            Authorization: `Bearer ${token}`,
            "Content-Disposition": `attachment; filename="${uploadName(file.name)}"`,
          },
          body: file,
          credentials: "omit",
        });
        if (resp.status !== 401) break;
      }
    } catch (e) {
      info(b, `Upload of ${file.name} failed: ${e.message}`);
      return;
    }
    const link = resp.headers.get("Location");
    if (resp.status === 201 && link) {
      let abs;
      try {
        abs = new URL(link, url).href;
      } catch (e) {
        info(b, `Upload of ${file.name} failed: the server answered a bad Location`);
        return;
      }
      sayTo(b.name, abs);
      return;
    }
    const why =
      resp.status === 401
        ? "the server did not accept this session's upload token (401)"
        : resp.status === 413
          ? "the file is too large, or over the account's quota (413)"
          : `the server answered ${resp.status} ${resp.statusText}`;
    info(b, `Upload of ${file.name} failed: ${why}`);
  }

  // Redraws the active buffer's messages. `keep` restores the buffer's own
  // scroll position (switching); otherwise the view sticks to the bottom if it
  // was there, and keeps its place in the old messages if not (history
  // arriving above).
  function renderMessages(keep) {
    const view = $("messages");
    const list = $("message-list");
    const b = state.buffers.get(state.active);
    const atBottom = view.scrollHeight - view.scrollTop - view.clientHeight < 30;
    const fromBottom = view.scrollHeight - view.scrollTop;
    const frag = document.createDocumentFragment();
    for (const m of b.messages) frag.append(messageNode(m));
    list.replaceChildren(frag);
    renderHistoryStatus();
    if (keep) {
      view.scrollTop = b.scrollTop === null ? view.scrollHeight : b.scrollTop;
    } else if (atBottom) {
      view.scrollTop = view.scrollHeight;
    } else {
      view.scrollTop = view.scrollHeight - fromBottom;
    }
    maybeLoadHistory();
  }

  function renderHistoryStatus() {
    const b = state.buffers.get(state.active);
    const s = $("history-status");
    let text = "";
    let status = "";
    if (b.kind !== "server" && state.caps.has("draft/chathistory")) {
      if (b.historyLoading) [text, status] = ["Loading older messages…", "loading"];
      else if (b.historyDone) [text, status] = ["Start of history", "done"];
      else [text, status] = ["Scroll up for older messages", "more"];
    }
    s.textContent = text;
    s.setAttribute("data-state", status);
  }

  function renderNicklist() {
    const b = state.buffers.get(state.active);
    const list = $("nicklist");
    list.replaceChildren();
    if (!b || b.kind !== "channel") {
      $("nick-count").textContent = "";
      return;
    }
    const rank = (p) => (p ? state.prefixChars.indexOf(p[0]) : state.prefixChars.length);
    const members = [...b.members.values()].sort(
      (x, y) => rank(x.prefixes) - rank(y.prefixes) || (fold(x.nick) < fold(y.nick) ? -1 : 1),
    );
    $("nick-count").textContent = `${members.length} ${members.length === 1 ? "person" : "people"}`;
    for (const m of members) {
      const button = el(
        "button",
        { type: "button", class: "nick", title: `Message ${m.nick}` },
        el("span", { class: "prefix", text: m.prefixes.slice(0, 1) }),
        el("span", { class: "nick-name", text: m.nick }),
      );
      button.addEventListener("click", () => switchTo(getBuffer(m.nick, true).key));
      list.append(el("li", { "data-test": "nick", "data-nick": m.nick, "data-prefix": m.prefixes }, button));
    }
  }

  // Adds a message to a buffer: kept sorted by time, one copy per msgid.
  function addMessage(buffer, m, opts) {
    opts = opts || {};
    if (m.msgid) {
      if (buffer.msgids.has(m.msgid)) return false;
      buffer.msgids.add(m.msgid);
    }
    const msgs = buffer.messages;
    let i = msgs.length;
    if (opts.history) while (i > 0 && msgs[i - 1].time >= m.time) i--;
    else while (i > 0 && msgs[i - 1].time > m.time) i--;
    msgs.splice(i, 0, m);
    if (msgs.length > MAX_MESSAGES_PER_BUFFER) {
      const gone = msgs.splice(0, msgs.length - MAX_MESSAGES_PER_BUFFER);
      for (const g of gone) if (g.msgid) buffer.msgids.delete(g.msgid);
      buffer.historyDone = false;
    }
    if (opts.quiet) return true;
    if (buffer.key === state.active) {
      const view = $("messages");
      const atBottom = view.scrollHeight - view.scrollTop - view.clientHeight < 30;
      if (i === msgs.length - 1) {
        $("message-list").append(messageNode(m));
        if (atBottom || m.self) view.scrollTop = view.scrollHeight;
      } else {
        renderMessages(false);
      }
    } else if (m.kind === "privmsg" || m.kind === "action" || m.kind === "notice") {
      if (!m.self) {
        buffer.unread++;
        if (buffer.kind === "query" || mentionsMe(m.text)) buffer.highlight = true;
        renderBufferList();
      }
    }
    return true;
  }

  function mentionsMe(text) {
    if (!state.nick) return false;
    const n = state.nick.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    return new RegExp(`(^|[^\\w])${n}([^\\w]|$)`, "i").test(text);
  }

  function msgTime(msg) {
    const t = msg.tags.time ? new Date(msg.tags.time) : new Date();
    return isNaN(t) ? new Date() : t;
  }

  function info(buffer, text, msg) {
    addMessage(buffer, { kind: "info", from: "", text, time: msg ? msgTime(msg) : new Date(), msgid: msg && msg.tags.msgid });
  }
  function serverInfo(text, msg) {
    info(getBuffer(SERVER_BUFFER, true), text, msg);
  }
  function activeInfo(text) {
    info(state.buffers.get(state.active) || getBuffer(SERVER_BUFFER, true), text);
  }

  function setStatus(text, s) {
    const st = $("conn-status");
    st.textContent = text;
    st.setAttribute("data-state", s);
  }

  // ---- connection -------------------------------------------------------------

  function socketUrl() {
    // Where the page came from (its directory, so a proxy may serve it under
    // a path), with ws:// or wss://.
    const u = new URL(".", location.href);
    u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
    u.search = "";
    u.hash = "";
    return u.href;
  }

  function send(line) {
    if (state.ws && state.ws.readyState === WebSocket.OPEN) {
      state.ws.send(line);
      return true;
    }
    activeInfo("Not connected.");
    return false;
  }
  const sendCmd = (...args) => send(buildLine(...args));

  function connect() {
    const s = state.settings;
    state.userClosed = false;
    state.registered = false;
    state.caps = new Set();
    state.offered = new Map();
    state.batches = new Map();
    state.pendingNames = new Map();
    state.nickAttempt = 0;
    state.saslDone = false;
    state.loggedIn = false;
    state.uploadToken = null;
    settleTokenWaiters(null, new Error("reconnecting"));
    state.isupport = new Map();
    renderUpload();
    state.nick = s.nick;
    $("me").textContent = s.nick;
    $("reconnect").hidden = true;
    setStatus("connecting", "connecting");
    let ws;
    try {
      ws = new WebSocket(socketUrl(), ["text.ircv3.net"]);
    } catch (e) {
      onClosed(`cannot connect: ${e.message}`);
      return;
    }
    state.ws = ws;
    ws.addEventListener("open", () => {
      if (ws !== state.ws) return;
      setStatus("registering", "registering");
      send("CAP LS 302");
      if (s.password && !s.account) sendCmd("PASS", s.password);
      sendCmd("NICK", s.nick);
      sendCmd("USER", s.account || s.nick, "0", "*", s.nick);
    });
    ws.addEventListener("message", (ev) => {
      if (ws !== state.ws) return;
      if (typeof ev.data !== "string") return;
      for (const line of ev.data.split("\n")) {
        if (line.replace(/\r$/, "") !== "") handleLine(line);
      }
    });
    ws.addEventListener("close", (ev) => {
      if (ws !== state.ws) return;
      onClosed(ev.reason || (state.userClosed ? "disconnected" : `connection closed (${ev.code})`));
    });
    ws.addEventListener("error", () => {
      if (ws !== state.ws) return;
      setStatus("connection error", "error");
    });
  }

  function onClosed(reason) {
    state.ws = null;
    state.uploadToken = null;
    settleTokenWaiters(null, new Error(`disconnected: ${reason}`));
    state.registered = false;
    setStatus(reason, "closed");
    $("reconnect").hidden = false;
    for (const b of state.buffers.values()) {
      if (b.kind === "channel" && b.joined) {
        b.joined = false;
        b.members.clear();
      }
      b.historyLoading = false;
    }
    serverInfo(`Disconnected: ${reason}`);
    renderNicklist();
    renderHistoryStatus();
    if (!$("app").hidden) return;
    if (!$("login-error").textContent) $("login-error").textContent = reason;
    $("connect").disabled = false;
  }

  function onRegistered() {
    state.registered = true;
    setStatus("connected", "connected");
    $("login").hidden = true;
    $("app").hidden = false;
    $("input").focus();
    // Rejoin what was open (after a reconnect) and the requested channels.
    const chans = new Set();
    for (const b of state.buffers.values()) if (b.kind === "channel") chans.add(b.name);
    for (const c of state.settings.channels) chans.add(c);
    for (const c of chans) sendCmd("JOIN", c);
    for (const b of state.buffers.values()) {
      if (b.kind === "query") {
        b.historyRequested = false;
        requestLatest(b);
      }
    }
  }

  function capEnd() {
    if (!state.registered) send("CAP END");
  }

  // ---- history ----------------------------------------------------------------

  function historyOn() {
    return state.caps.has("draft/chathistory") && state.caps.has("batch");
  }
  function historyLimit() {
    const max = parseInt(state.isupport.get("CHATHISTORY") || "", 10);
    return max > 0 ? Math.min(max, HISTORY_PAGE) : HISTORY_PAGE;
  }

  function requestLatest(b) {
    if (!historyOn() || b.historyRequested || !state.registered) return;
    b.historyRequested = true;
    b.historyLoading = true;
    sendCmd("CHATHISTORY", "LATEST", b.name, "*", String(historyLimit()));
    if (b.key === state.active) renderHistoryStatus();
  }

  function maybeLoadHistory() {
    const b = state.buffers.get(state.active);
    if (!b || b.kind === "server" || !historyOn() || !state.registered) return;
    if (b.historyLoading || b.historyDone || !b.historyRequested) return;
    if ($("messages").scrollTop > 40) return;
    const oldest = b.messages.find((m) => m.msgid || m.kind !== "info");
    if (!oldest) return;
    const ref = oldest.msgid ? `msgid=${oldest.msgid}` : `timestamp=${oldest.time.toISOString()}`;
    b.historyLoading = true;
    b.beforeRequest = true;
    sendCmd("CHATHISTORY", "BEFORE", b.name, ref, String(historyLimit()));
    renderHistoryStatus();
  }

  function finishHistoryBatch(batch) {
    const target = batch.params[0];
    if (!target) return;
    const b = getBuffer(target, true);
    // A page of history is older than what the buffer holds (or the same
    // messages): newest first, each goes before everything not older than it,
    // so messages of one millisecond keep the server's order.
    let added = 0;
    for (const msg of [...batch.messages].reverse()) {
      if (handleMessage(msg, { history: true, buffer: b })) added++;
    }
    b.historyLoading = false;
    if (b.beforeRequest) {
      if (added === 0) b.historyDone = true;
      b.beforeRequest = false;
    } else if (batch.messages.length < historyLimit()) {
      b.historyDone = true;
    }
    if (b.key === state.active) renderMessages(false);
  }

  // ---- incoming lines ---------------------------------------------------------

  const handlers = {};

  function handleLine(raw) {
    dispatch(parseLine(raw));
  }

  function dispatch(msg) {
    const ref = msg.tags.batch;
    if (ref && state.batches.has(ref) && msg.command !== "BATCH") {
      state.batches.get(ref).messages.push(msg);
      return;
    }
    const h = handlers[msg.command];
    if (h) h(msg);
    else if (/^[0-9]{3}$/.test(msg.command)) numericFallback(msg);
    else serverInfo(msg.raw, msg);
  }

  function numericFallback(msg) {
    const code = parseInt(msg.command, 10);
    const text = msg.params.slice(1).join(" ");
    if (code >= 400 && code < 600) activeInfo(`Error: ${text}`);
    else serverInfo(text, msg);
  }

  handlers.PING = (msg) => sendCmd("PONG", ...msg.params);
  handlers.PONG = () => {};
  handlers.ERROR = (msg) => serverInfo(`Server: ${msg.params.join(" ")}`, msg);

  handlers.CAP = (msg) => {
    const sub = (msg.params[1] || "").toUpperCase();
    const more = msg.params[2] === "*";
    const list = (more ? msg.params[3] : msg.params[2]) || "";
    const caps = list.split(" ").filter(Boolean);
    if (sub === "LS" || sub === "NEW") {
      for (const c of caps) {
        const eq = c.indexOf("=");
        state.offered.set(eq === -1 ? c : c.slice(0, eq), eq === -1 ? "" : c.slice(eq + 1));
      }
      if (more) return;
      const want = WANTED_CAPS.filter(
        (c) => state.offered.has(c) && !state.caps.has(c) && (c !== "sasl" || (state.settings.account && !state.registered)),
      );
      if (sub === "LS" && state.settings.account && !state.offered.has("sasl")) {
        serverInfo("The server does not offer SASL: connecting without logging in.");
      }
      if (want.length) sendCmd("CAP", "REQ", want.join(" "));
      else if (sub === "LS") capEnd();
    } else if (sub === "ACK") {
      for (const c of caps) {
        if (c[0] === "-") state.caps.delete(c.slice(1));
        else state.caps.add(c);
      }
      if (more) return;
      if (caps.includes("sasl") && state.settings.account && !state.saslDone) {
        send("AUTHENTICATE PLAIN");
      } else {
        capEnd();
      }
    } else if (sub === "NAK") {
      capEnd();
    } else if (sub === "DEL") {
      for (const c of caps) {
        state.caps.delete(c);
        state.offered.delete(c);
      }
    }
  };

  handlers.AUTHENTICATE = (msg) => {
    if (msg.params[0] !== "+") return;
    const s = state.settings;
    const payload = base64Utf8(`${s.account}\0${s.account}\0${s.password}`);
    for (let i = 0; i < payload.length; i += 400) send(`AUTHENTICATE ${payload.slice(i, i + 400)}`);
    if (payload.length % 400 === 0) send("AUTHENTICATE +");
  };
  const saslDone = (ok) => (msg) => {
    state.saslDone = true;
    serverInfo(msg.params.slice(1).join(" "), msg);
    if (ok) {
      state.loggedIn = true;
      renderUpload();
      capEnd();
    } else {
      // A failed login stops here rather than going on without the account.
      $("login-error").textContent = `Login failed: ${msg.params.slice(1).join(" ")}`;
      state.userClosed = true;
      send("QUIT :login failed");
    }
  };
  handlers["903"] = saslDone(true);
  for (const c of ["902", "904", "905", "906", "908"]) handlers[c] = saslDone(false);
  handlers["907"] = (msg) => serverInfo(msg.params.slice(1).join(" "), msg);
  handlers["900"] = (msg) => serverInfo(msg.params[msg.params.length - 1], msg);

  handlers["001"] = (msg) => {
    state.nick = msg.params[0];
    $("me").textContent = state.nick;
    serverInfo(msg.params[1] || "", msg);
    onRegistered();
  };
  handlers["005"] = (msg) => {
    for (const tok of msg.params.slice(1, -1)) {
      const neg = tok[0] === "-";
      const t = neg ? tok.slice(1) : tok;
      const eq = t.indexOf("=");
      const key = (eq === -1 ? t : t.slice(0, eq)).toUpperCase();
      const val = eq === -1 ? "" : unescapeIsupport(t.slice(eq + 1));
      if (neg) state.isupport.delete(key);
      else state.isupport.set(key, val);
      if (key === "PREFIX") {
        const m = /^\(([^)]*)\)(.*)$/.exec(val);
        if (m && m[1].length === m[2].length) [state.prefixModes, state.prefixChars] = [m[1], m[2]];
      } else if (key === "CHANTYPES") state.chanTypes = val;
      else if (key === "CHANMODES") state.chanModes = val.split(",");
      else if (key === "CASEMAPPING") state.casemapping = val;
      else if (key === "NETWORK") {
        $("network").textContent = val;
        document.title = `${val} — shardline chat`;
        renderBufferList();
      }
    }
    renderUpload();
  };
  function unescapeIsupport(v) {
    return v.replace(/\\x([0-9a-fA-F]{2})/g, (_, h) => String.fromCharCode(parseInt(h, 16)));
  }

  function nickInUse(msg) {
    if (state.registered) {
      activeInfo(msg.params.slice(1).join(" "));
      return;
    }
    state.nickAttempt++;
    const base = state.settings.nick.slice(0, 28);
    state.nick = state.nickAttempt === 1 ? `${base}_` : `${base}${state.nickAttempt}`;
    $("me").textContent = state.nick;
    sendCmd("NICK", state.nick);
  }
  handlers["433"] = nickInUse;
  handlers["432"] = (msg) => {
    if (state.registered) activeInfo(msg.params.slice(1).join(" "));
    else {
      $("login-error").textContent = `Nickname refused: ${msg.params.slice(2).join(" ") || msg.params[1]}`;
      state.userClosed = true;
      send("QUIT");
    }
  };

  // Topic, names.
  handlers["332"] = (msg) => {
    const b = getBuffer(msg.params[1], true);
    b.topic = msg.params[2] || "";
    if (b.key === state.active) renderTopic();
  };
  handlers["331"] = (msg) => {
    const b = getBuffer(msg.params[1], true);
    b.topic = "";
    if (b.key === state.active) renderTopic();
  };
  handlers["333"] = () => {};
  handlers["353"] = (msg) => {
    const chan = msg.params[2];
    const key = fold(chan);
    if (!state.pendingNames.has(key)) state.pendingNames.set(key, new Map());
    const names = state.pendingNames.get(key);
    for (const entry of (msg.params[3] || "").split(" ").filter(Boolean)) {
      let i = 0;
      while (i < entry.length && state.prefixChars.includes(entry[i])) i++;
      let nick = entry.slice(i);
      const bang = nick.indexOf("!");
      if (bang !== -1) nick = nick.slice(0, bang);
      names.set(fold(nick), { nick, prefixes: entry.slice(0, i) });
    }
  };
  handlers["366"] = (msg) => {
    const key = fold(msg.params[1]);
    const names = state.pendingNames.get(key) || new Map();
    state.pendingNames.delete(key);
    const b = state.buffers.get(key);
    if (!b) return;
    b.members = names;
    if (b.key === state.active) renderNicklist();
  };

  // Standard replies (FAIL/WARN/NOTE).
  const standardReply = (kind) => (msg) => {
    const [command, code] = msg.params;
    const text = msg.params[msg.params.length - 1];
    if (command === "FILEHOST" && kind === "FAIL") {
      settleTokenWaiters(null, new Error(text));
      return;
    }
    if (command === "CHATHISTORY") {
      for (const b of state.buffers.values()) {
        if (b.historyLoading) {
          b.historyLoading = false;
          b.historyDone = true;
          b.beforeRequest = false;
        }
      }
      if (state.buffers.has(state.active)) renderHistoryStatus();
    }
    activeInfo(`${kind} ${command} ${code}: ${text}`);
  };
  handlers.FILEHOST = (msg) => {
    const [sub, token, secs] = msg.params;
    if (sub !== "TOKEN" || !token) return;
    state.uploadToken = { token, until: Date.now() + 1000 * (Number(secs) || 0) };
    settleTokenWaiters(token);
  };
  handlers.FAIL = standardReply("FAIL");
  handlers.WARN = standardReply("WARN");
  handlers.NOTE = standardReply("NOTE");

  handlers.BATCH = (msg) => {
    const ref = msg.params[0] || "";
    if (ref[0] === "+") {
      state.batches.set(ref.slice(1), { type: msg.params[1] || "", params: msg.params.slice(2), messages: [] });
    } else if (ref[0] === "-") {
      const batch = state.batches.get(ref.slice(1));
      state.batches.delete(ref.slice(1));
      if (!batch) return;
      if (batch.type === "chathistory") finishHistoryBatch(batch);
      else for (const m of batch.messages) dispatch(Object.assign(m, { tags: Object.assign({}, m.tags, { batch: undefined }) }));
    }
  };

  // Messages.
  function handleMessage(msg, opts) {
    opts = opts || {};
    if (msg.command !== "PRIVMSG" && msg.command !== "NOTICE") return false;
    const [target, text0] = msg.params;
    let text = text0 || "";
    const self = sameNick(msg.nick, state.nick);
    let kind = msg.command === "NOTICE" ? "notice" : "privmsg";
    if (text.startsWith("\x01") && msg.command === "PRIVMSG") {
      const body = text.replace(/^\x01|\x01$/g, "");
      const sp = body.indexOf(" ");
      const ctcp = (sp === -1 ? body : body.slice(0, sp)).toUpperCase();
      if (ctcp !== "ACTION") {
        if (!opts.history && !self && ctcp === "VERSION") sendCmd("NOTICE", msg.nick, "\x01VERSION shardline web client\x01");
        return false;
      }
      kind = "action";
      text = sp === -1 ? "" : body.slice(sp + 1);
    }
    let buffer = opts.buffer;
    if (!buffer) {
      if (isChannel(target) || (target[0] && state.prefixChars.includes(target[0]) && isChannel(target.slice(1)))) {
        buffer = getBuffer(isChannel(target) ? target : target.slice(1), true);
      } else if (!msg.source.includes("!")) {
        buffer = getBuffer(SERVER_BUFFER, true); // a server notice
      } else {
        buffer = getBuffer(self ? target : msg.nick, true);
        if (!opts.history) requestLatest(buffer);
      }
    }
    return addMessage(
      buffer,
      { kind, from: msg.nick || msg.source, text, time: msgTime(msg), msgid: msg.tags.msgid, self },
      { quiet: !!opts.history, history: !!opts.history },
    );
  }
  handlers.PRIVMSG = (msg) => handleMessage(msg);
  handlers.NOTICE = (msg) => handleMessage(msg);
  handlers.TAGMSG = () => {};

  // Membership.
  handlers.JOIN = (msg) => {
    const chan = msg.params[0];
    const b = getBuffer(chan, true);
    if (sameNick(msg.nick, state.nick)) {
      b.joined = true;
      b.members = new Map();
      b.historyRequested = false;
      b.historyDone = false;
      if (state.settings.pendingSwitch === fold(chan) || state.active === SERVER_BUFFER) {
        state.settings.pendingSwitch = null;
        switchTo(b.key);
      }
      requestLatest(b);
    } else {
      b.members.set(fold(msg.nick), { nick: msg.nick, prefixes: "" });
      if (b.key === state.active) renderNicklist();
    }
    info(b, `${msg.nick} (${msg.source.slice(msg.nick.length + 1)}) joined ${chan}`, msg);
  };
  function leave(b, who, text, msg) {
    if (sameNick(who, state.nick)) {
      b.joined = false;
      b.members = new Map();
    } else {
      b.members.delete(fold(who));
    }
    info(b, text, msg);
    if (b.key === state.active) renderNicklist();
  }
  handlers.PART = (msg) => {
    const b = getBuffer(msg.params[0], false);
    if (!b) return;
    const reason = msg.params[1] ? ` (${msg.params[1]})` : "";
    leave(b, msg.nick, `${msg.nick} left ${b.name}${reason}`, msg);
    if (sameNick(msg.nick, state.nick) && b.closing) removeBuffer(b);
  };
  handlers.KICK = (msg) => {
    const b = getBuffer(msg.params[0], false);
    if (!b) return;
    leave(b, msg.params[1], `${msg.params[1]} was kicked by ${msg.nick} (${msg.params[2] || ""})`, msg);
  };
  handlers.QUIT = (msg) => {
    const key = fold(msg.nick);
    for (const b of state.buffers.values()) {
      if ((b.kind === "channel" && b.members.has(key)) || (b.kind === "query" && b.key === key)) {
        leave(b, msg.nick, `${msg.nick} quit (${msg.params[0] || ""})`, msg);
      }
    }
  };
  handlers.NICK = (msg) => {
    const old = msg.nick;
    const nick = msg.params[0];
    if (sameNick(old, state.nick)) {
      state.nick = nick;
      $("me").textContent = nick;
    }
    const key = fold(old);
    for (const b of state.buffers.values()) {
      if (b.kind === "channel" && b.members.has(key)) {
        const m = b.members.get(key);
        b.members.delete(key);
        b.members.set(fold(nick), { nick, prefixes: m.prefixes });
        info(b, `${old} is now known as ${nick}`, msg);
        if (b.key === state.active) renderNicklist();
      }
    }
  };
  handlers.TOPIC = (msg) => {
    const b = getBuffer(msg.params[0], false);
    if (!b) return;
    b.topic = msg.params[1] || "";
    info(b, `${msg.nick} set the topic: ${b.topic}`, msg);
    if (b.key === state.active) renderTopic();
  };
  handlers.MODE = (msg) => {
    const target = msg.params[0];
    if (!isChannel(target)) {
      serverInfo(`Your modes: ${msg.params.slice(1).join(" ")}`, msg);
      return;
    }
    const b = getBuffer(target, false);
    if (!b) return;
    const [listModes, alwaysArg, setArg] = state.chanModes;
    let adding = true;
    let argi = 2;
    for (const c of msg.params[1] || "") {
      if (c === "+" || c === "-") {
        adding = c === "+";
        continue;
      }
      const pi = state.prefixModes.indexOf(c);
      let arg = null;
      if (pi !== -1 || (listModes || "").includes(c) || (alwaysArg || "").includes(c) || (adding && (setArg || "").includes(c))) {
        arg = msg.params[argi++];
      }
      if (pi !== -1 && arg) {
        const m = b.members.get(fold(arg));
        if (!m) continue;
        const p = state.prefixChars[pi];
        let set = m.prefixes.replace(p, "");
        if (adding) set += p;
        m.prefixes = [...state.prefixChars].filter((x) => set.includes(x)).join("");
      }
    }
    info(b, `${msg.nick} set mode ${msg.params.slice(1).join(" ")}`, msg);
    if (b.key === state.active) renderNicklist();
  };
  // Replies shown in the server buffer by the numeric fallback; a few that
  // belong to the channel being looked at:
  handlers["324"] = (msg) => info(getBuffer(msg.params[1], true), `Modes: ${msg.params.slice(2).join(" ")}`, msg);
  for (const c of ["372", "375", "376", "002", "003", "004", "251", "252", "253", "254", "255", "265", "266", "250", "422"]) {
    handlers[c] = (msg) => serverInfo(msg.params.slice(1).join(" "), msg);
  }

  // ---- user input -------------------------------------------------------------

  function sayTo(target, text, action) {
    const b = getBuffer(target, true);
    for (const piece of splitText(text, MAX_TEXT_BYTES)) {
      const body = action ? `\x01ACTION ${piece}\x01` : piece;
      if (!sendCmd("PRIVMSG", target, body)) return;
      if (!state.caps.has("echo-message")) {
        addMessage(b, { kind: action ? "action" : "privmsg", from: state.nick, text: piece, time: new Date(), self: true });
      }
    }
  }

  const HELP = [
    "/join #channel [key] — join a channel",
    "/part [#channel] [reason] — leave a channel",
    "/msg nick text — send a private message (opens a conversation)",
    "/query nick — open a conversation",
    "/me action — describe an action",
    "/nick newnick — change your nickname",
    "/topic [text] — show or set the channel topic",
    "/close — close this conversation or leave this channel",
    "/quote LINE — send a raw IRC line",
    "/quit [message] — disconnect",
  ];

  function runCommand(text) {
    const b = state.buffers.get(state.active);
    const target = b && b.kind !== "server" ? b.name : null;
    if (!text.startsWith("/") || text.startsWith("//")) {
      if (text.startsWith("//")) text = text.slice(1);
      if (!target) {
        activeInfo("This is the server buffer: use /join #channel or /msg nick text, or /quote for raw IRC.");
        return;
      }
      sayTo(target, text, false);
      return;
    }
    const sp = text.indexOf(" ");
    const cmd = (sp === -1 ? text.slice(1) : text.slice(1, sp)).toLowerCase();
    const rest = sp === -1 ? "" : text.slice(sp + 1).trim();
    const args = rest.split(/\s+/).filter(Boolean);
    switch (cmd) {
      case "join":
      case "j":
        if (!args[0]) return activeInfo("Usage: /join #channel [key]");
        {
          const chan = isChannel(args[0]) ? args[0] : `#${args[0]}`;
          state.settings.pendingSwitch = fold(chan);
          const existing = state.buffers.get(fold(chan));
          if (existing && existing.joined) return switchTo(existing.key);
          args[1] ? sendCmd("JOIN", chan, args[1]) : sendCmd("JOIN", chan);
        }
        return;
      case "part":
      case "leave": {
        let chan = target;
        let reason = rest;
        if (args[0] && isChannel(args[0])) {
          chan = args[0];
          reason = rest.slice(args[0].length).trim();
        }
        if (!chan || !isChannel(chan)) return activeInfo("Usage: /part [#channel] [reason]");
        return reason ? sendCmd("PART", chan, reason) : sendCmd("PART", chan);
      }
      case "msg":
      case "query": {
        if (!args[0]) return activeInfo(`Usage: /${cmd} nick${cmd === "msg" ? " text" : ""}`);
        const body = rest.slice(args[0].length).trim();
        const q = getBuffer(args[0], true);
        if (cmd === "query" || !isChannel(args[0])) switchTo(q.key);
        if (q.kind === "query") requestLatest(q);
        if (body) sayTo(args[0], body, false);
        return;
      }
      case "me":
        if (!target) return activeInfo("/me works in a channel or a conversation.");
        return sayTo(target, rest, true);
      case "nick":
        if (!args[0]) return activeInfo("Usage: /nick newnick");
        return sendCmd("NICK", args[0]);
      case "topic":
        if (!target || !isChannel(target)) return activeInfo("/topic works in a channel.");
        return rest ? sendCmd("TOPIC", target, rest) : sendCmd("TOPIC", target);
      case "close":
        if (b && b.kind !== "server") closeBuffer(b);
        return;
      case "quote":
      case "raw":
        if (!rest) return activeInfo("Usage: /quote RAW IRC LINE");
        return send(rest.replace(/[\r\n]/g, " "));
      case "quit":
        state.userClosed = true;
        return rest ? sendCmd("QUIT", rest) : send("QUIT");
      case "help":
        for (const h of HELP) activeInfo(h);
        return;
      default:
        activeInfo(`Unknown command /${cmd}; /help lists them, /quote sends raw IRC.`);
    }
  }

  function closeBuffer(b) {
    if (b.kind === "channel" && b.joined) {
      b.closing = true;
      sendCmd("PART", b.name);
    } else {
      removeBuffer(b);
    }
  }
  function removeBuffer(b) {
    state.buffers.delete(b.key);
    state.order = state.order.filter((k) => k !== b.key);
    if (state.active === b.key) switchTo(SERVER_BUFFER);
    else renderBufferList();
  }

  // ---- wiring -------------------------------------------------------------------

  function init() {
    getBuffer(SERVER_BUFFER, true);
    const params = new URLSearchParams(location.search);
    if (params.get("nick")) $("nick").value = params.get("nick");
    if (params.get("channels")) $("channels").value = params.get("channels");
    $("connect-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const nick = $("nick").value.trim();
      if (!nick) return;
      $("login-error").textContent = "";
      $("connect").disabled = true;
      state.settings = {
        nick,
        account: $("account").value.trim(),
        password: $("password").value,
        channels: $("channels")
          .value.split(/[,\s]+/)
          .filter(Boolean)
          .map((c) => (isChannel(c) ? c : `#${c}`)),
        pendingSwitch: null,
      };
      connect();
    });
    $("input-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const input = $("input");
      const text = input.value;
      if (!text.trim()) return;
      input.value = "";
      state.sent.push(text);
      if (state.sent.length > 100) state.sent.shift();
      state.sentPos = state.sent.length;
      runCommand(text);
    });
    // Up and Down walk through what was typed before.
    $("input").addEventListener("keydown", (ev) => {
      if ((ev.key !== "ArrowUp" && ev.key !== "ArrowDown") || ev.altKey || ev.ctrlKey || ev.metaKey) return;
      const pos = state.sentPos + (ev.key === "ArrowUp" ? -1 : 1);
      if (pos < 0 || pos > state.sent.length) return;
      ev.preventDefault();
      state.sentPos = pos;
      $("input").value = pos === state.sent.length ? "" : state.sent[pos];
    });
    $("reconnect").addEventListener("click", () => connect());
    $("upload").addEventListener("click", () => $("upload-input").click());
    $("upload-input").addEventListener("change", () => {
      const input = $("upload-input");
      const files = [...input.files];
      input.value = "";
      for (const f of files) uploadFile(f);
    });
    $("messages").addEventListener("scroll", () => maybeLoadHistory(), { passive: true });
    renderBufferList();
  }

  // For tests in a page (no effect on the client).
  window.shardlineChat = { parseLine, buildLine, splitText, linkify, state };

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
