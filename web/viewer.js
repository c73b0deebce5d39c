// Receive-only viewer for OBS Browser Source: the program (presenter video + voice), no controls,
// and it reconnects by itself (server restarts, network loss) with a growing pause, up to 10 s.
"use strict";

(() => {
  const video = document.getElementById("video");
  const hint = document.getElementById("hint");
  let pc = null, session = null, retryMs = 1000, timer = null;
  window.viewer = { connects: 0, get pc() { return pc; }, counter: presenter.frameCounter(video, () => pc) };

  function scheduleReconnect(delayMs) {
    if (timer) return;
    timer = setTimeout(() => { timer = null; connect(); }, delayMs);
    retryMs = Math.min(retryMs * 2, 10000);
  }

  function teardown() {
    presenter.endSession(session);
    session = null;
    if (pc) pc.close();
    pc = null;
  }

  async function connect() {
    teardown();
    pc = new RTCPeerConnection({ iceServers: [] });
    const mine = pc;
    const remote = new MediaStream();
    video.srcObject = remote;
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.addTransceiver("audio", { direction: "recvonly" });
    pc.addEventListener("track", (ev) => {
      remote.addTrack(ev.track);
      video.play().catch(() => {
        video.muted = true;                       // autoplay with sound blocked: play muted, offer sound
        hint.hidden = false;
        video.play().catch(() => {});
      });
    });
    pc.addEventListener("connectionstatechange", () => {
      if (pc !== mine) return;
      if (mine.connectionState === "connected") { retryMs = 1000; window.viewer.connects += 1; }
      if (["failed", "closed"].includes(mine.connectionState)) scheduleReconnect(retryMs);
      // "disconnected" may heal by itself (a brief network loss); give it 5 s
      if (mine.connectionState === "disconnected") {
        setTimeout(() => { if (pc === mine && mine.connectionState !== "connected") scheduleReconnect(0); }, 5000);
      }
    });
    try {
      session = await presenter.negotiate(pc, "/view");
    } catch (e) {
      console.warn("viewer: " + e.message);
      scheduleReconnect(e.retryAfter ? e.retryAfter * 1000 : retryMs);
    }
  }

  hint.addEventListener("click", () => { video.muted = false; hint.hidden = true; video.play().catch(() => {}); });
  window.addEventListener("pagehide", teardown);
  connect();
})();
