// The presenter page: microphone in over WebRTC, the presenter's video and delayed voice back.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const video = $("video");
  const params = new URLSearchParams(location.search);
  let pc = null, mic = null, session = null, info = null, statsTimer = null;
  const counter = presenter.frameCounter(video, () => pc);

  // What getUserMedia errors mean, in words a person can act on.
  function micErrorText(e) {
    switch (e && e.name) {
      case "NotAllowedError": return "Microphone permission was denied. Allow it in the address bar (the lock or camera icon) and press Start again.";
      case "NotFoundError": return "No microphone was found. Plug one in or choose one in your system's sound settings, then press Start.";
      case "NotReadableError": return "The microphone is busy or failed to start. Close other apps that use it and press Start again.";
      case "OverconstrainedError": return "The microphone cannot deliver the requested format. Try another microphone.";
      case "SecurityError": return "The browser blocked the microphone: open this page over https or on localhost.";
      case "AbortError": return "Starting the microphone was interrupted. Press Start again.";
      default: return "Could not use the microphone: " + (e && e.message ? e.message : e);
    }
  }

  function setStatus(text) { $("status").textContent = text; }
  function setError(text) { $("error").textContent = text || ""; }

  async function loadInfo() {
    try {
      info = await presenter.fetchJSON("/info");
      $("labels").textContent = "Synthetic video: " + info.labels.join(" · ") + ".";
      const learnedMouth = info.engine !== "baseline", learnedFace = info.renderer_kind === "generator";
      $("badge").textContent = (learnedMouth ? "SyncFormer mouth" : "loudness mouth, no learning") + " · "
        + (learnedFace ? "generator face" : "baseline renderer, no learning");
      $("badge").title = (learnedMouth ? "The mouth is moved by the trained Style-SyncFormer"
        : "The mouth is moved by loudness, not by a trained model") + "; "
        + (learnedFace ? "the face is painted by the trained generator" : "the face is drawn by the baseline warp renderer");
      $("avatar").textContent = (info.avatar.split("/").pop() || info.avatar) + (info.attribution ? " — " + info.attribution : "");
      if (presenter.token) $("viewer-link").href = "/viewer?token=" + encodeURIComponent(presenter.token);
    } catch (e) {
      setError("The presenter server is not answering: " + e.message);
    }
  }

  async function start() {
    setError("");
    $("start").disabled = true;
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      setError("This browser offers no microphone access here: open the page over https or on localhost.");
      $("start").disabled = false;
      return;
    }
    setStatus("Asking for the microphone…");
    try {
      // Voice processing off: it attenuates and gates the signal the mouth is driven by.
      mic = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false, channelCount: 1 },
        video: false,
      });
    } catch (e) {
      setError(micErrorText(e));
      setStatus("Not started.");
      $("start").disabled = false;
      return;
    }
    setStatus("Connecting…");
    pc = new RTCPeerConnection({ iceServers: [] });
    const remote = new MediaStream();
    video.srcObject = remote;
    pc.addEventListener("track", (ev) => {
      remote.addTrack(ev.track);
      video.play().catch(() => {});
    });
    pc.addEventListener("connectionstatechange", () => {
      const s = pc && pc.connectionState;
      if (s === "connected") setStatus("Live: speak and the presenter speaks with you.");
      if (s === "failed") { setError("The connection failed. Press Start to try again."); stop(); }
      if (s === "disconnected") setStatus("Connection interrupted, waiting…");
    });
    mic.getTracks().forEach((t) => pc.addTrack(t, mic));
    pc.addTransceiver("video", { direction: "recvonly" });
    try {
      session = await presenter.negotiate(pc, "/offer");
    } catch (e) {
      setError(e.status === 503 ? "The server is busy: " + e.message : "Could not connect: " + e.message);
      stop();
      return;
    }
    $("stop").disabled = false;
    statsTimer = setInterval(updateReadout, 1000);
    if (params.get("probe") === "1" && window.startLatencyProbe && info) {
      window.presenterProbe = window.startLatencyProbe({ video, micStream: mic, remoteStream: remote, mouthBox: info.mouth_box });
    }
  }

  function stop() {
    if (statsTimer) clearInterval(statsTimer);
    statsTimer = null;
    presenter.endSession(session);
    session = null;
    if (pc) pc.close();
    pc = null;
    if (mic) mic.getTracks().forEach((t) => t.stop());
    mic = null;
    video.srcObject = null;
    $("start").disabled = false;
    $("stop").disabled = true;
    if (!$("error").textContent) setStatus("Stopped.");
    $("fps").textContent = "fps –";
    $("latency").textContent = "latency –";
  }

  async function updateReadout() {
    if (!pc || !session) return;
    const fps = await counter.fps();
    $("fps").textContent = "fps " + fps.toFixed(1);
    try {
      const net = await presenter.networkDelayMs(pc);
      const st = await presenter.fetchJSON("/session/" + session);
      // the server's measured audio delay (push to send), or its configured buffer before speech
      const serverMs = 1000 * (st.latency_s !== null ? st.latency_s : st.buffer_s);
      let text = `latency ≈ ${Math.round(serverMs + net)} ms ` +
                 `(server ${Math.round(serverMs)} + network/jitter ${Math.round(net)})`;
      if (st.extra_delay_s > 0) {
        // the server held back some silence because mouth poses came late (a busy CPU)
        text += ` · +${Math.round(1000 * st.extra_delay_s)} ms for late mouth poses`;
      }
      if (st.degraded > 0) {
        // renders missed their frames, so some frames were drawn by the cheaper warp renderer
        text += ` · ${st.degraded} frames by the cheaper renderer (busy CPU)`;
      }
      if (window.presenterProbe && window.presenterProbe.median() !== null) {
        text += ` · measured mic→screen ${Math.round(window.presenterProbe.median())} ms`;
      }
      $("latency").textContent = text;
    } catch (e) {
      /* the session may just have ended */
    }
  }

  $("start").addEventListener("click", start);
  $("stop").addEventListener("click", stop);
  window.addEventListener("pagehide", () => { if (pc) pc.close(); presenter.endSession(session); });
  window.presenterPage = { start, stop, counter, get pc() { return pc; }, get session() { return session; } };
  loadInfo();
})();
