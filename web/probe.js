// Latency probe for the presenter page (?probe=1): what a user sees, measured in the page itself.
//
// - microphone onsets: the local microphone's level (Web Audio) rising after >= 300 ms of quiet;
// - mouth onsets: the share of dark pixels inside the mouth box of each shown frame
//   (requestVideoFrameCallback), rising after >= 300 ms closed: the open mouth is a dark cavity;
// - voice onsets: the same level test on the presenter's returned audio.
// mic->screen latency = mouth onset - microphone onset; A/V offset = mouth onset - voice onset
// (> 0: the lips come after the voice). Web Audio adds its own few ms to both audio sides.
"use strict";

window.startLatencyProbe = function ({ video, micStream, remoteStream, mouthBox }) {
  // OPEN_RISE: the learned mouth opens less than the loudness baseline's jaw (about 0.02-0.07 of
  // the box turns dark on speech); the idle loop's own dark share moves by < 0.003.
  const QUIET_MS = 300, LEVEL_ON = 0.01, LEVEL_OFF = 0.004, DARK_LUMA = 70, OPEN_RISE = 0.012;
  const ctx = new AudioContext();
  ctx.resume().catch(() => {});
  const analyser = (stream) => {
    const an = ctx.createAnalyser();
    an.fftSize = 256;                              // 5.3 ms at 48 kHz
    ctx.createMediaStreamSource(stream).connect(an);
    return an;
  };
  const micAn = analyser(micStream);
  const outAn = remoteStream.getAudioTracks().length ? analyser(remoteStream) : null;
  const buf = new Float32Array(256);
  const level = (an) => {
    an.getFloatTimeDomainData(buf);
    let s = 0;
    for (let i = 0; i < buf.length; i++) s += buf[i] * buf[i];
    return Math.sqrt(s / buf.length);
  };

  // Onset detector: an onset is the value crossing `on` at the end of a rise that began after
  // >= QUIET_MS below `off`; dips between off and on inside a phrase do not start a new one.
  const detector = () => ({ on: false, quiet: true, quietSince: performance.now(), quietFor: 0, onsets: [] });
  const step = (d, t, value, on, off) => {
    if (value < off) {
      if (!d.quiet) { d.quiet = true; d.quietSince = t; }
      d.on = false;
      return;
    }
    if (d.quiet) { d.quiet = false; d.quietFor = t - d.quietSince; }
    if (!d.on && value > on) {
      d.on = true;
      if (d.quietFor >= QUIET_MS) d.onsets.push(t);
      d.quietFor = 0;
    }
  };
  const mic = detector(), voice = detector(), mouth = detector();
  const levels = [];                             // [time, microphone level, returned voice level]
  const timer = setInterval(() => {
    const t = performance.now();
    const m = level(micAn), v = outAn ? level(outAn) : 0;
    levels.push([t, m, v]);
    if (levels.length > 4000) levels.shift();
    step(mic, t, m, LEVEL_ON, LEVEL_OFF);
    if (outAn) step(voice, t, v, LEVEL_ON, LEVEL_OFF);
  }, 4);

  const [x0, y0, x1, y1] = mouthBox;
  const canvas = document.createElement("canvas");
  canvas.width = x1 - x0;
  canvas.height = y1 - y0;
  const g = canvas.getContext("2d", { willReadFrequently: true });
  const openness = [];                           // [time, share of dark pixels]
  let shown = 0, stopped = false;
  const onFrame = (now, meta) => {
    if (stopped) return;
    shown += 1;
    const t = meta && meta.expectedDisplayTime ? meta.expectedDisplayTime : now;
    g.drawImage(video, x0, y0, canvas.width, canvas.height, 0, 0, canvas.width, canvas.height);
    const px = g.getImageData(0, 0, canvas.width, canvas.height).data;
    let dark = 0;
    for (let i = 0; i < px.length; i += 4) {
      if (0.299 * px[i] + 0.587 * px[i + 1] + 0.114 * px[i + 2] < DARK_LUMA) dark++;
    }
    const share = dark / (px.length / 4);
    openness.push([t, share]);
    if (openness.length > 3000) openness.shift();
    // the closed mouth's own dark share (shadows) is the low end of the last 3 s
    const recent = openness.filter(([u]) => t - u < 3000).map(([, v]) => v).sort((a, b) => a - b);
    const base = recent[Math.floor(recent.length * 0.1)];
    step(mouth, t, share - base, OPEN_RISE, OPEN_RISE / 2);
    video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);

  // Pair each onset with the first mouth onset within 1 s after it (mic) or +-0.5 s (voice):
  // -> [[onset time, ms to the mouth onset], ...]; times are performance.now() ms.
  const started = performance.now();
  const pairs = (onsets, lo, hi) => onsets.map((a) => {
    const m = mouth.onsets.find((b) => b - a > lo && b - a < hi);
    return m === undefined ? null : [a, m - a];
  }).filter((x) => x !== null);
  const median = (xs) => {
    if (!xs.length) return null;
    const s = xs.slice().sort((a, b) => a - b);
    return s[Math.floor(s.length / 2)];
  };
  return {
    median: () => median(pairs(mic.onsets, 0, 1000).map(([, d]) => d)),
    result: () => ({
      started: started,
      latencies_ms: pairs(mic.onsets, 0, 1000),
      av_offsets_ms: pairs(voice.onsets, -500, 500),
      mic_onsets: mic.onsets.length, voice_onsets: voice.onsets.length, mouth_onsets: mouth.onsets.length,
      shown_frames: shown,
      openness: openness.map(([t, v]) => [Math.round(t), Math.round(v * 1000) / 1000]),
      levels: levels.filter((_, i) => i % 5 === 0).map(([t, m, v]) => [Math.round(t), Math.round(m * 1000) / 1000,
                                                                        Math.round(v * 1000) / 1000]),
    }),
    stop: () => { stopped = true; clearInterval(timer); ctx.close(); },
  };
};
