"""The chat example in a real browser: Debian's Chromium driven by Playwright.

The example is served by the documented command (``tests/test_example_chat.py``
runs it the same way), on asyncio and on trio. Two browser windows join one
room and chat; then the server is stopped with SIGTERM and started again on the
same port, and both pages must come back by themselves, as the page promises
("Disconnected. Reconnecting in N s…", then "Connected as ..."), with the
history intact and messages flowing again. Along the way the page gets a quick
accessibility check, and a screenshot of it is saved (light and dark) for a
person to look at.

It needs ``/usr/bin/chromium`` (``.ci/install-browser`` installs it) and the
``playwright`` Python package (its own browser downloads are not used). Without
either the tests are skipped, except under ``CI=true``, where that fails.
Playwright's sync API is used from plain test functions: the parametrization is
over the server's worker class, not over the test's event loop.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import struct
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from test_example_chat import EXAMPLE, SERVE_COMMAND
from test_runserver import ServerProcess, running

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - depends on the environment
    expect = sync_playwright = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = Path("/usr/bin/chromium")
#: As root there is no sandbox; the rest keeps Chromium off the network and quiet.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Bound on every single wait in the browser (milliseconds) and on the server (seconds).
WAIT_MS = 15_000
STOP_TIMEOUT = 15.0
#: The page's backoff while the server is down: 0.25-0.5 s, 0.5-1 s, 1-2 s, 2-4 s, 4-8 s...
#: A restart takes a few seconds, so the page is back within the fifth try at worst.
RECONNECT_MS = 20_000
VIEWPORT = {"width": 1000, "height": 700}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the module; every test gets fresh contexts."""
    missing = []
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} (apt-get install chromium, or .ci/install-browser)")
    if sync_playwright is None:
        missing.append("the playwright Python package (pip install playwright)")
    if missing:
        reason = "browser tests need " + " and ".join(missing)
        if os.environ.get("CI") == "true":
            pytest.fail(reason + " -- required under CI=true", pytrace=False)
        pytest.skip(reason)

    manager = sync_playwright()
    playwright = manager.start()
    try:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS, timeout=WAIT_MS
        )
        try:
            yield chromium
        finally:
            chromium.close()
    finally:
        manager.__exit__(None, None, None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serving(port: int, worker_class: str, env: dict[str, str]) -> Iterator[ServerProcess]:
    """The documented command on 127.0.0.1:``port``; returns once it listens."""
    command = f"{SERVE_COMMAND} --bind 127.0.0.1:{port} --worker-class {worker_class}"
    with running(["sh", "-c", command], cwd=EXAMPLE, env=env) as server:
        server.wait_for(rf"http://127\.0\.0\.1:{port}\b")
        yield server


def stop_server(server: ServerProcess) -> None:
    """SIGTERM to the command's process group, as a service manager sends it.

    ``sh`` itself dies of the signal; the server must shut down gracefully and
    leave nothing behind, so that the port is free for the restart.
    """
    server.signal(signal.SIGTERM)
    assert server.wait_exit(STOP_TIMEOUT) in (0, -signal.SIGTERM), server.output
    server.wait_for(r"\] Server stopped$")
    deadline = time.monotonic() + STOP_TIMEOUT
    while True:
        try:
            os.killpg(server.process.pid, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < deadline, "the server outlived SIGTERM:\n" + server.output
        time.sleep(0.05)
    assert "Traceback" not in server.output, server.output


#: The page shows the server is gone: the live status says so once, and the
#: countdown beside it, which changes every second, is not read out.
DISCONNECTED_SCRIPT = r"""
() => {
  const status = document.querySelector("[role=status]");
  const countdown = document.getElementById("retry-countdown");
  return status.dataset.state === "closed" && status.textContent === "Disconnected." &&
    countdown.getAttribute("aria-hidden") === "true" && !status.contains(countdown) &&
    /^ Reconnecting in \d+ s…$/.test(countdown.textContent);
}
"""


def status(page: Page) -> Any:
    return page.get_by_role("status")


def messages(page: Page) -> Any:
    return page.get_by_role("list", name=re.compile(r"^Messages in #"))


def send(page: Page, text: str) -> None:
    box = page.get_by_role("textbox", name="Message")
    box.fill(text)
    box.press("Enter")
    expect(box).to_have_value("", timeout=WAIT_MS)


def expect_connected(page: Page, timeout: int = WAIT_MS) -> None:
    expect(status(page)).to_have_attribute("data-state", "open", timeout=timeout)
    expect(status(page)).to_have_text(re.compile(r"^Connected as "), timeout=WAIT_MS)
    expect(page.get_by_role("button", name="Send")).to_be_enabled(timeout=WAIT_MS)


def expect_message(page: Page, user: str, text: str) -> None:
    """``text`` by ``user`` is in the list, exactly once."""
    item = messages(page).get_by_role("listitem").filter(has_text=text)
    expect(item).to_have_count(1, timeout=WAIT_MS)
    expect(item.locator(".author")).to_have_text(user, timeout=WAIT_MS)


# -- the accessibility sanity check ---------------------------------------------------

#: Runs in the page; returns a list of problems (empty when all is well).
A11Y_SCRIPT = r"""
() => {
  const problems = [];
  const name = (el) =>
    (el.getAttribute("aria-label") || "").trim() ||
    (el.getAttribute("aria-labelledby") || "").split(/\s+/).filter(Boolean)
      .map((id) => (document.getElementById(id) || {}).textContent || "").join(" ").trim() ||
    (el.labels ? Array.from(el.labels).map((l) => l.textContent).join(" ").trim() : "") ||
    (el.textContent || "").trim() ||
    (el.getAttribute("title") || "").trim();

  if (!document.documentElement.lang) problems.push("<html> has no lang");
  if (!document.title.trim()) problems.push("the page has no title");
  if (document.querySelectorAll("main").length !== 1) problems.push("not exactly one <main>");
  if (!document.querySelector("body > header")) problems.push("no banner (<header>)");
  document.querySelectorAll("nav").forEach((nav) => {
    if (!name(nav)) problems.push("a <nav> without a label");
  });
  if (document.querySelectorAll("h1").length !== 1) problems.push("not exactly one <h1>");

  document.querySelectorAll("input, select, textarea").forEach((el) => {
    if (el.type === "hidden") return;
    const labelled = (el.labels && el.labels.length) || el.getAttribute("aria-label") ||
      el.getAttribute("aria-labelledby");
    if (!labelled) problems.push(`unlabelled ${el.tagName.toLowerCase()}#${el.id || el.name}`);
  });
  document.querySelectorAll("button, a[href]").forEach((el) => {
    if (!name(el)) problems.push(`a ${el.tagName.toLowerCase()} without a name`);
  });

  const statusEl = document.getElementById("status");
  if (!statusEl) {
    problems.push("no #status");
  } else {
    const live = statusEl.getAttribute("aria-live") ||
      (statusEl.getAttribute("role") === "status" ? "polite" : "");
    if (!["polite", "assertive"].includes(live)) problems.push("#status is not a live region");
  }
  const list = document.getElementById("messages");
  if (!list || list.getAttribute("aria-live") !== "polite") {
    problems.push("new messages are not announced (#messages without aria-live=polite)");
  }

  // Contrast of every visible piece of text against what is behind it (WCAG AA).
  const rgba = (value) => {
    const m = value.match(/rgba?\(([\d.]+),?\s*([\d.]+),?\s*([\d.]+)(?:[,/]\s*([\d.]+))?/);
    return m ? [+m[1], +m[2], +m[3], m[4] === undefined ? 1 : +m[4]] : null;
  };
  const luminance = ([r, g, b]) => {
    const c = [r, g, b].map((v) => {
      v /= 255;
      return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
  };
  const background = (el) => {
    for (let node = el; node; node = node.parentElement) {
      const bg = rgba(getComputedStyle(node).backgroundColor);
      if (bg && bg[3] > 0.99) return bg;
    }
    return [255, 255, 255, 1];
  };
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const checked = new Set();
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const el = node.parentElement;
    if (!node.textContent.trim() || checked.has(el)) continue;
    checked.add(el);
    if (!el.checkVisibility() || el.closest(".visually-hidden, .skip-link, noscript")) continue;
    if (el.closest("button:disabled")) continue;  // inactive controls are exempt
    const style = getComputedStyle(el);
    const fg = rgba(style.color);
    if (!fg) { problems.push(`unreadable colour ${style.color}`); continue; }
    const [l1, l2] = [luminance(fg), luminance(background(el))].sort((a, b) => b - a);
    const ratio = (l1 + 0.05) / (l2 + 0.05);
    const size = parseFloat(style.fontSize);
    const large = size >= 24 || (size >= 18.66 && +style.fontWeight >= 700);
    if (ratio < (large ? 3 : 4.5)) {
      problems.push(`contrast ${ratio.toFixed(2)} for "${node.textContent.trim().slice(0, 30)}"`);
    }
  }
  // A text field's edge must stand out from what is around it (3:1, WCAG 1.4.11).
  document.querySelectorAll("input:not([type=hidden]), textarea, select").forEach((el) => {
    if (!el.checkVisibility()) return;
    const style = getComputedStyle(el);
    const around = luminance(background(el.parentElement));
    const edge = Math.max(
      ...[rgba(style.borderTopColor), rgba(style.backgroundColor)]
        .filter((c) => c && c[3] > 0.99)
        .map((c) => {
          const [a, b] = [luminance(c), around].sort((x, y) => y - x);
          return (a + 0.05) / (b + 0.05);
        }),
      1,
    );
    if (edge < 3) problems.push(`the edge of #${el.id || el.name} has contrast ${edge.toFixed(2)}`);
  });
  return problems;
}
"""


def check_accessibility(page: Page) -> None:
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        problems = page.evaluate(A11Y_SCRIPT)
        assert problems == [], f"{scheme} colour scheme: {problems}"
    page.emulate_media(color_scheme="light")


def check_keyboard(page: Page) -> None:
    """On a freshly loaded page, the first Tab reaches the skip link, which is then
    visible; following it lands the next Tab in the room (the message box), which
    shows a focus ring."""
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to content")
    expect(skip).to_be_focused(timeout=WAIT_MS)
    box = skip.bounding_box()
    assert box is not None
    assert box["x"] >= 0, box
    assert box["y"] >= 0, box
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")
    message_box = page.get_by_role("textbox", name="Message")
    expect(message_box).to_be_focused(timeout=WAIT_MS)
    outline = message_box.evaluate(
        "el => [getComputedStyle(el).outlineStyle, getComputedStyle(el).outlineWidth]"
    )
    assert outline[0] != "none", outline
    assert outline[1] != "0px", outline


# -- screenshots ------------------------------------------------------------------------


def png_summary(data: bytes) -> tuple[int, int, int]:
    """Width, height and the number of distinct colours (up to 256 counted) of an RGB(A) PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, chunks, header = 8, [], b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            chunks.append(body)
        pos += 12 + length
    width, height, depth, colour_type = struct.unpack(">IIBB", header[:10])
    assert depth == 8, depth
    assert colour_type in (2, 6), colour_type
    channels = 3 if colour_type == 2 else 4
    raw = zlib.decompress(b"".join(chunks))
    stride = width * channels
    # Undo the per-row filters (PNG spec, section 9) to get at the pixels.
    rows: list[bytearray] = []
    previous = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, row = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for x in range(stride):
            left = row[x - channels] if x >= channels else 0
            up = previous[x]
            up_left = previous[x - channels] if x >= channels else 0
            if kind == 1:
                row[x] = (row[x] + left) & 0xFF
            elif kind == 2:
                row[x] = (row[x] + up) & 0xFF
            elif kind == 3:
                row[x] = (row[x] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - up_left
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
                predictor = left if pa <= pb and pa <= pc else up if pb <= pc else up_left
                row[x] = (row[x] + predictor) & 0xFF
        rows.append(row)
        previous = row
    colours: set[bytes] = set()
    for row in rows[:: max(1, height // 100)]:
        for x in range(0, stride, channels * 3):
            colours.add(bytes(row[x : x + 3]))
            if len(colours) >= 256:
                return width, height, len(colours)
    return width, height, len(colours)


def screenshot(page: Page, path: Path) -> None:
    page.screenshot(path=str(path), timeout=WAIT_MS)
    assert path.is_file(), path
    data = path.read_bytes()
    assert len(data) > 10_000, f"{path}: only {len(data)} bytes"
    width, height, colours = png_summary(data)
    assert (width, height) == (VIEWPORT["width"], VIEWPORT["height"]), (width, height)
    # A blank or one-colour page has a handful; text, borders and the status dot many more.
    assert colours >= 20, f"{path}: only {colours} colours"
    print(f"screenshot: {path}", file=sys.stderr)


# -- the test ---------------------------------------------------------------------------


@pytest.mark.parametrize("worker_class", ["asyncio", "trio"])
def test_two_browsers_chat_and_come_back_after_a_restart(
    browser: Browser, tmp_path: Path, worker_class: str
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        "CHAT_DATABASE": str(tmp_path / "chat.sqlite3"),
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    }
    contexts = [browser.new_context(viewport=VIEWPORT, base_url=base) for _ in range(2)]
    try:
        alice, bob = (context.new_page() for context in contexts)
        page_errors: list[str] = []
        failed_requests: list[str] = []
        for page in (alice, bob):
            page.set_default_timeout(WAIT_MS)
            page.on("pageerror", lambda error: page_errors.append(str(error)))
            page.on(
                "response",
                lambda response: (
                    response.status >= 400
                    and failed_requests.append(f"{response.status} {response.url}")
                ),
            )

        with serving(port, worker_class, env) as server:
            for page in (alice, bob):
                page.goto("/chat/lobby/", timeout=WAIT_MS)
                expect(page).to_have_title(re.compile(r"^#lobby · "))
                expect(page.get_by_role("heading", level=1)).to_have_text("#lobby")
                expect_connected(page)
            check_keyboard(alice)

            # Who is here, live: both visitors; a third tab shows up, and drops
            # out when it closes.
            here = alice.get_by_role("list", name="People in #lobby").get_by_role("listitem")
            expect(here).to_have_count(2)
            extra = contexts[1].new_page()
            extra.goto("/chat/lobby/", timeout=WAIT_MS)
            expect_connected(extra)
            expect(here).to_have_count(3)
            expect(alice.locator("#member-count")).to_have_text("(3)")
            extra.close()
            expect(here).to_have_count(2)

            send(alice, "hello from alice")
            for page in (alice, bob):
                expect_message(page, "anonymous", "hello from alice")
            send(bob, "hi alice, bob here")
            for page in (alice, bob):
                expect_message(page, "anonymous", "hi alice, bob here")

            check_accessibility(alice)

            # The server goes away: both pages say so and stop accepting input.
            stop_server(server)
        for page in (alice, bob):
            page.wait_for_function(DISCONNECTED_SCRIPT, timeout=WAIT_MS)
            expect(page.get_by_role("button", name="Send")).to_be_disabled()
        screenshot(bob, tmp_path / f"chat-{worker_class}-disconnected.png")

        # Back on the same port: the pages reconnect on their own, the history
        # comes back once (not doubled), and the room works again.
        with serving(port, worker_class, env):
            for page in (alice, bob):
                expect_connected(page, timeout=RECONNECT_MS)
                expect_message(page, "anonymous", "hello from alice")
                expect_message(page, "anonymous", "hi alice, bob here")
            send(bob, "still here after the restart")
            for page in (alice, bob):
                expect_message(page, "anonymous", "still here after the restart")
            expect(messages(alice).get_by_role("listitem")).to_have_count(3)
            # The member list is rebuilt on reconnect, not doubled.
            for page in (alice, bob):
                people = page.get_by_role("list", name="People in #lobby")
                expect(people.get_by_role("listitem")).to_have_count(2)

            screenshot(alice, tmp_path / f"chat-{worker_class}.png")
            alice.emulate_media(color_scheme="dark")
            screenshot(alice, tmp_path / f"chat-{worker_class}-dark.png")
        assert page_errors == []
        assert failed_requests == []  # no 404 for a favicon or a static file
    finally:
        for context in contexts:
            context.close()
