// Shared by the presenter and viewer pages: signalling with the presenter server.
// Plain ES2017, no build step; uses only standard WebRTC APIs (Chromium and Firefox).
"use strict";

const presenter = (() => {
  const token = new URLSearchParams(location.search).get("token");

  function headers(extra) {
    const h = Object.assign({}, extra || {});
    if (token) h["Authorization"] = "Bearer " + token;
    return h;
  }

  async function fetchJSON(path, options) {
    const opts = Object.assign({}, options || {});
    opts.headers = headers(opts.headers);
    const r = await fetch(path, opts);
    let body = null;
    try { body = await r.json(); } catch (e) { body = null; }
    if (!r.ok) {
      const msg = (body && body.error) || r.statusText;
      const retry = r.headers.get("Retry-After");
      const err = new Error(`server said ${r.status}: ${msg}` + (retry ? ` (retry in ${retry} s)` : ""));
      err.status = r.status;
      err.retryAfter = retry ? Number(retry) : null;
      throw err;
    }
    return body;
  }

  // Wait until ICE gathering completes (the server takes no trickled candidates), at most timeoutMs.
  function gathered(pc, timeoutMs) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => { pc.removeEventListener("icegatheringstatechange", check); clearTimeout(timer); resolve(); };
      const check = () => { if (pc.iceGatheringState === "complete") done(); };
      const timer = setTimeout(done, timeoutMs || 3000);
      pc.addEventListener("icegatheringstatechange", check);
    });
  }

  // Offer to `path` (/offer or /view); returns the session id once the answer is applied.
  async function negotiate(pc, path) {
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc, 3000);
    const answer = await fetchJSON(path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ sdp: pc.localDescription.sdp, type: pc.localDescription.type }),
    });
    await pc.setRemoteDescription({ sdp: answer.sdp, type: answer.type });
    return answer.session;
  }

  function endSession(id) {
    if (!id) return;
    // keepalive lets the DELETE finish while the page unloads
    fetch("/session/" + id, { method: "DELETE", headers: headers(), keepalive: true }).catch(() => {});
  }

  // Frames shown per second: requestVideoFrameCallback where there is one, else decoded frames from getStats.
  function frameCounter(video, pcGetter) {
    const state = { shown: 0, times: [] };
    if ("requestVideoFrameCallback" in HTMLVideoElement.prototype) {
      const tick = (now) => {
        state.shown += 1;
        state.times.push(now);
        if (state.times.length > 100) state.times.shift();
        video.requestVideoFrameCallback(tick);
      };
      video.requestVideoFrameCallback(tick);
    }
    let last = null;
    state.fps = async () => {
      const t = performance.now();
      if (state.times.length > 1) {
        const recent = state.times.filter((x) => t - x <= 1000);
        return recent.length;
      }
      const pc = pcGetter();
      if (!pc) return 0;
      let decoded = 0;
      (await pc.getStats()).forEach((s) => { if (s.type === "inbound-rtp" && s.kind === "video") decoded = s.framesDecoded || 0; });
      const fps = last ? (decoded - last.n) * 1000 / (t - last.t) : 0;
      last = { n: decoded, t: t };
      return fps;
    };
    return state;
  }

  // Network side of the delay, from getStats: video jitter buffer and half the round trip, ms.
  async function networkDelayMs(pc) {
    let jitter = 0, rtt = 0;
    (await pc.getStats()).forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "video" && s.jitterBufferEmittedCount) {
        jitter = 1000 * s.jitterBufferDelay / s.jitterBufferEmittedCount;
      }
      if (s.type === "candidate-pair" && s.nominated && s.currentRoundTripTime) rtt = 1000 * s.currentRoundTripTime;
    });
    return jitter + rtt / 2;
  }

  return { token, headers, fetchJSON, negotiate, endSession, frameCounter, networkDelayMs };
})();
