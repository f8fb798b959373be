"""Shared by the simulator page's browser tests (tests/simulator/test_browser.py and
tests/calls/test_review_browser.py)."""

# A stand-in for the page's WebSocket, so a test can play server messages into the real page
# (no call, no engines): window.__sockets[0].push({...}) delivers one JSON message.
FAKE_SOCKET = """
window.__sockets = [];
class FakeSocket {
  constructor(url) {
    this.url = url; this.readyState = 0; this.sent = []; this.binaryType = "blob";
    window.__sockets.push(this);
    setTimeout(() => { this.readyState = 1; if (this.onopen) this.onopen(); }, 0);
  }
  send(data) { this.sent.push(typeof data === "string" ? JSON.parse(data) : "binary"); }
  close(code = 1000, reason = "") {
    if (this.readyState === 3) return;
    this.readyState = 3;
    if (this.onclose) this.onclose({ code, reason });
  }
  push(message) { this.onmessage({ data: JSON.stringify(message) }); }
}
Object.assign(FakeSocket, { CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3 });
window.WebSocket = FakeSocket;
"""
