// The chat page: one WebSocket per room, reopened with backoff when it drops.
//
// Protocol (see rooms/consumers.py): we send {"text": "..."}; the server sends
// "welcome" (who we are + recent history + who is here) after each
// (re)connect, "message" for every message in the room, "error" when it
// refuses ours, and, because we ask with ?presence=1, "presence.join" and
// "presence.leave" as connections come and go.
"use strict";

(function () {
  const chat = document.getElementById("chat");
  if (!chat) return;

  const statusEl = document.getElementById("status");
  const countdownEl = document.getElementById("retry-countdown");
  const list = document.getElementById("messages");
  const form = document.getElementById("composer");
  const input = document.getElementById("message-input");
  const sendButton = document.getElementById("send-button");
  const errorEl = document.getElementById("composer-error");

  const scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
  const url = scheme + window.location.host + chat.dataset.wsPath + "?presence=1";
  const membersEl = document.getElementById("members");
  const memberCountEl = document.getElementById("member-count");
  // Present connections by id; shown one line per person (two tabs: "ann ×2").
  const present = new Map();

  // Reconnect delays: 0.5 s doubling up to 30 s, each scaled by a random
  // 50-100 % so that many tabs do not all come back in the same instant
  // after a server restart.
  const BASE_DELAY_MS = 500;
  const MAX_DELAY_MS = 30000;

  let socket = null;
  let attempt = 0;
  let retryTimer = null;
  let countdownTimer = null;
  const seen = new Set();

  // The status is a live region: change it once per state, not every second.
  // The countdown beside it is visual only (aria-hidden).
  function setStatus(state, text) {
    if (statusEl.dataset.state !== state || statusEl.textContent !== text) {
      statusEl.dataset.state = state;
      statusEl.textContent = text;
    }
    countdownEl.textContent = "";
    sendButton.disabled = state !== "open";
  }

  function showError(text) {
    errorEl.textContent = text;
    errorEl.hidden = !text;
  }

  function timeLabel(iso) {
    const date = new Date(iso);
    return Number.isNaN(date.getTime())
      ? ""
      : date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function render(message) {
    if (seen.has(message.id)) return;
    seen.add(message.id);
    const item = document.createElement("li");
    item.className = "message";
    const meta = document.createElement("div");
    meta.className = "meta";
    const author = document.createElement("span");
    author.className = "author";
    author.textContent = message.user;
    const time = document.createElement("time");
    time.dateTime = message.created;
    time.textContent = timeLabel(message.created);
    meta.append(author, " ", time);
    const body = document.createElement("p");
    body.className = "text";
    body.textContent = message.text; // text, never HTML: messages cannot inject markup
    item.append(meta, body);
    list.append(item);
  }

  function renderMembers() {
    const people = new Map();
    present.forEach(function (member) {
      // Signed-in users are one person however many tabs; each visitor is one.
      const key = member.user === null ? "#" + member.id : "u" + member.user;
      const person = people.get(key) || { name: member.name, tabs: 0, since: member.since };
      person.tabs += 1;
      person.since = Math.min(person.since, member.since);
      people.set(key, person);
    });
    const sorted = Array.from(people.values()).sort(function (a, b) {
      return a.since - b.since;
    });
    membersEl.replaceChildren(
      ...sorted.map(function (person) {
        const item = document.createElement("li");
        item.className = "member";
        item.textContent = person.tabs > 1 ? person.name + " ×" + person.tabs : person.name;
        return item;
      })
    );
    memberCountEl.textContent = "(" + sorted.length + ")";
  }

  function scrollToEnd() {
    list.scrollTop = list.scrollHeight;
  }

  function onWelcome(data) {
    // A fresh history after every (re)connect: rebuild the list from it, so
    // nothing written while we were away is missing and nothing is doubled.
    list.setAttribute("aria-busy", "true");
    list.replaceChildren();
    seen.clear();
    data.history.forEach(render);
    present.clear();
    (data.members || []).forEach(function (member) {
      present.set(member.id, member);
    });
    renderMembers();
    list.removeAttribute("aria-busy");
    scrollToEnd();
    attempt = 0;
    setStatus("open", "Connected as " + data.user);
  }

  function connect() {
    clearTimeout(retryTimer);
    clearInterval(countdownTimer);
    setStatus("connecting", attempt ? "Reconnecting…" : "Connecting…");
    socket = new WebSocket(url);

    socket.addEventListener("message", function (event) {
      let data;
      try {
        data = JSON.parse(event.data);
      } catch (err) {
        return;
      }
      if (data.type === "welcome") {
        onWelcome(data);
      } else if (data.type === "message") {
        const atEnd = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
        render(data);
        if (atEnd) scrollToEnd();
      } else if (data.type === "presence.join") {
        present.set(data.member.id, data.member);
        renderMembers();
      } else if (data.type === "presence.leave") {
        present.delete(data.member.id);
        renderMembers();
      } else if (data.type === "error") {
        showError(data.error);
      }
    });

    socket.addEventListener("close", function () {
      socket = null;
      scheduleReconnect();
    });
  }

  function scheduleReconnect() {
    const ceiling = Math.min(MAX_DELAY_MS, BASE_DELAY_MS * 2 ** attempt);
    const delay = Math.round(ceiling * (0.5 + Math.random() / 2));
    attempt += 1;
    const due = Date.now() + delay;
    const tick = function () {
      const seconds = Math.max(0, Math.ceil((due - Date.now()) / 1000));
      countdownEl.textContent = " Reconnecting in " + seconds + " s…";
    };
    setStatus("closed", "Disconnected.");
    tick();
    countdownTimer = setInterval(tick, 1000);
    retryTimer = setTimeout(connect, delay);
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    const text = input.value.trim();
    if (!text || !socket || socket.readyState !== WebSocket.OPEN) return;
    socket.send(JSON.stringify({ text: text }));
    input.value = "";
    showError("");
    input.focus();
  });

  // Coming back online, or back to a hidden tab, is a good moment to retry
  // at once instead of waiting out a long backoff.
  function retryNow() {
    if (!socket && retryTimer !== null) {
      attempt = Math.max(0, attempt - 1);
      connect();
    }
  }
  window.addEventListener("online", retryNow);
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible") retryNow();
  });

  connect();
})();
