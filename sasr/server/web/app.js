// sasr's page: talk (microphone -> the live WebSocket protocol) and upload (POST with stream=true).
// No build step, no dependencies. Every event received is also kept in window.sasrLog (with the time
// it arrived) for debugging and for the browser tests.
"use strict";

const $ = (id) => document.getElementById(id);
const STREAM_PATH = "/v1/audio/transcriptions/stream";
const RATES = [8000, 16000, 24000, 48000]; // sample rates the live protocol takes as they are
const RECONNECT_MS = [500, 1000, 2000, 4000, 8000];
const log = (window.sasrLog = []);

const server = { model: "", languages: [], auth: false };
const talk = {
  running: false, // the user pressed Start and not Stop
  socket: null,
  started: false, // session.started received on the current socket
  context: null,
  stream: null,
  sentMs: 0, // audio sent on the current socket
  before: "", // text of earlier sessions (before a reconnect)
  committed: "", // the current session's committed words
  partial: "",
  retries: 0,
  format: "pcm16_16k_mono",
};

function note(kind, data) {
  log.push({ t: performance.now(), kind, ...data });
}

function setStatus(id, text, error = false) {
  const el = $(id);
  el.textContent = text;
  el.classList.toggle("error", error);
}

function apiKey() {
  return $("api-key").value.trim();
}

function authHeaders() {
  return apiKey() ? { Authorization: `Bearer ${apiKey()}` } : {};
}

async function loadInfo() {
  try {
    const response = await fetch("/info");
    Object.assign(server, await response.json());
  } catch {
    setStatus("talk-status", "The server cannot be reached.", true);
    return;
  }
  $("model").textContent = server.model;
  $("auth").hidden = !server.auth;
  const keep = sessionStorage.getItem("sasr-api-key");
  if (keep) $("api-key").value = keep;
  if (server.languages.length > 1) {
    const select = $("language");
    select.append(new Option("detect", ""));
    for (const code of server.languages) select.append(new Option(code, code));
    select.hidden = $("language-label").hidden = false;
  }
}

// -- talk ------------------------------------------------------------------------------------------

async function startTalk() {
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false } });
  } catch (err) {
    const why = {
      NotAllowedError: "Microphone permission was denied. Allow it for this site and press Start again.",
      NotFoundError: "No microphone was found.",
      NotReadableError: "The microphone is in use by another application.",
    }[err.name] || `The microphone could not be opened (${err.name || err}).`;
    setStatus("talk-status", why, true);
    note("mic-error", { name: err.name });
    return;
  }
  talk.stream = stream;
  // The browser's own resampler (band-limited) brings the microphone to 16 kHz where it can; a
  // browser that cannot connect a microphone to a context of another rate gets its native rate and
  // the page's resampler.
  let source;
  for (const options of [{ sampleRate: 16000 }, {}]) {
    try {
      talk.context = new AudioContext(options);
      source = talk.context.createMediaStreamSource(stream);
      break;
    } catch (err) {
      talk.context?.close();
      talk.context = null;
      if (!options.sampleRate) throw err; // the native rate failed too: nothing else to try
    }
  }
  const rate = talk.context.sampleRate;
  talk.format = RATES.includes(rate) ? `pcm16_${rate / 1000}k_mono` : "f32_16k_mono";
  talk.resample = RATES.includes(rate) ? null : resampler(rate, 16000);
  await talk.context.audioWorklet.addModule("/web/capture.js");
  const node = new AudioWorkletNode(talk.context, "sasr-capture");
  node.port.onmessage = (event) => onAudio(event.data);
  source.connect(node);
  Object.assign(talk, { running: true, before: "", committed: "", partial: "", retries: 0 });
  render();
  setButton(true);
  openSocket();
}

// Linear resampling for a context whose rate the protocol does not take (e.g. 44.1 kHz).
function resampler(from, to) {
  const step = from / to;
  let position = 0; // in input samples, relative to the current frame (may point at the last one)
  let last = 0;
  return (input) => {
    const out = [];
    while (position < input.length - 1) {
      const i = Math.floor(position);
      const a = i < 0 ? last : input[i];
      out.push(a + (input[i + 1] - a) * (position - i));
      position += step;
    }
    position -= input.length;
    last = input[input.length - 1];
    return new Float32Array(out);
  };
}

function openSocket() {
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${STREAM_PATH}`;
  const protocols = apiKey() ? ["sasr", `openai-insecure-api-key.${apiKey()}`] : [];
  const socket = new WebSocket(url, protocols);
  socket.binaryType = "arraybuffer";
  Object.assign(talk, { socket, started: false, sentMs: 0 });
  socket.onopen = () => {
    const start = { type: "session.start", audio_format: talk.format, partials: true };
    if ($("language").value) start.language = $("language").value;
    socket.send(JSON.stringify(start));
    setStatus("talk-status", "Connecting…");
  };
  socket.onmessage = (message) => onEvent(socket, JSON.parse(message.data));
  socket.onclose = (event) => onClose(socket, event);
}

function onAudio(frame) {
  let sum = 0;
  for (const x of frame) sum += x * x;
  const level = Math.min(100, Math.round(Math.sqrt(sum / frame.length) * 400));
  $("level").style.width = `${level}%`;
  $("level").parentElement.setAttribute("aria-valuenow", String(level));
  const socket = talk.socket;
  if (!talk.running || !socket || socket.readyState !== WebSocket.OPEN || !talk.started) return;
  let payload;
  if (talk.resample) {
    payload = talk.resample(frame);
    talk.sentMs += payload.length / 16;
  } else {
    payload = new Int16Array(frame.length);
    for (let i = 0; i < frame.length; i++) payload[i] = Math.max(-1, Math.min(1, frame[i])) * 32767;
    talk.sentMs += (frame.length * 1000) / talk.context.sampleRate;
  }
  socket.send(payload.buffer);
}

function onEvent(socket, event) {
  note("event", { event });
  if (socket !== talk.socket) return;
  switch (event.type) {
    case "session.started":
      talk.started = true;
      talk.retries = 0;
      setStatus("talk-status", "Listening: speak now.");
      break;
    case "transcript.delta":
      talk.committed += event.delta;
      showLatency(event.audio_ms);
      break;
    case "transcript.partial":
      talk.partial = event.text;
      showLatency(event.audio_ms);
      break;
    case "transcript.final":
      talk.committed = event.text;
      talk.partial = "";
      setStatus("talk-status", "Done. Press Start to talk again.");
      break;
    case "error":
      onError(event);
      break;
  }
  render();
}

function onError(event) {
  const messages = {
    too_many_sessions: "The server is busy: every live session is in use. Try again in a moment.",
    unauthorized: "The API key was refused. Enter a valid key and press Start again.",
  };
  setStatus("talk-status", messages[event.code] || `Error: ${event.message}`, true);
  stopCapture(); // the server closes the socket after an error: no reconnect
}

function onClose(socket, event) {
  note("close", { code: event.code });
  if (socket !== talk.socket || !talk.running) return;
  // lost while talking (server restart, network): reconnect and go on, keeping the text so far
  talk.before = joined(talk.before, talk.committed);
  talk.committed = talk.partial = "";
  const wait = RECONNECT_MS[Math.min(talk.retries++, RECONNECT_MS.length - 1)];
  setStatus("talk-status", `Connection lost; reconnecting in ${wait / 1000} s…`, true);
  setTimeout(() => talk.running && openSocket(), wait);
}

function showLatency(audioMs) {
  $("latency").textContent = `latency ${Math.max(0, (talk.sentMs - audioMs) / 1000).toFixed(1)} s`;
}

function stopTalk() {
  const socket = talk.socket;
  talk.running = false;
  stopCapture();
  if (socket && socket.readyState === WebSocket.OPEN && talk.started) {
    socket.send(JSON.stringify({ type: "session.end" }));
    setStatus("talk-status", "Finishing…");
  } else if (socket) {
    socket.close();
  }
}

function stopCapture() {
  talk.running = false;
  talk.stream?.getTracks().forEach((track) => track.stop());
  talk.context?.close();
  talk.stream = talk.context = null;
  $("level").style.width = "0";
  setButton(false);
}

function setButton(running) {
  const button = $("talk");
  button.textContent = running ? "Stop" : "Start";
  button.setAttribute("aria-pressed", String(running));
}

function joined(a, b) {
  return a && b ? `${a} ${b}` : a || b;
}

function render() {
  $("committed").textContent = joined(talk.before, talk.committed);
  $("partial").textContent = talk.partial;
}

// -- upload ----------------------------------------------------------------------------------------

async function upload(file) {
  const form = new FormData();
  form.append("file", file);
  form.append("stream", "true");
  $("upload-text").textContent = "";
  $("downloads").hidden = true;
  setStatus("upload-status", `Transcribing ${file.name}…`);
  let response;
  try {
    response = await fetch("/v1/audio/transcriptions", { method: "POST", body: form, headers: authHeaders() });
  } catch {
    setStatus("upload-status", "The server cannot be reached.", true);
    return;
  }
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    const message = body.error?.message || response.statusText;
    const busy = response.status === 503 ? "The server is busy; try again in a moment. " : "";
    setStatus("upload-status", `${busy}${message} (${response.status})`, true);
    note("upload-error", { status: response.status });
    return;
  }
  const segments = [];
  let text = "";
  for await (const event of serverSentEvents(response)) {
    note("upload-event", { event });
    if (event.type === "transcript.text.delta") {
      text += event.delta;
      if (event.start !== undefined) segments.push({ start: event.start, end: event.end, text: event.delta.trim() });
    } else if (event.type === "transcript.text.done") {
      text = event.text;
    }
    $("upload-text").textContent = text;
  }
  setStatus("upload-status", `Done: ${file.name}.`);
  offer("dl-txt", file.name, "txt", `${text}\n`);
  offer("dl-srt", file.name, "srt", subtitles(segments, ",", false));
  offer("dl-vtt", file.name, "vtt", subtitles(segments, ".", true));
  $("downloads").hidden = false;
}

async function* serverSentEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let pending = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    pending += value;
    let end;
    while ((end = pending.indexOf("\n\n")) >= 0) {
      const data = pending.slice(0, end).replace(/^data: /, "");
      pending = pending.slice(end + 2);
      if (data && data !== "[DONE]") yield JSON.parse(data);
    }
  }
}

function clock(seconds, decimal) {
  const ms = Math.round(seconds * 1000);
  const pad = (n, width = 2) => String(n).padStart(width, "0");
  return `${pad(Math.floor(ms / 3600000))}:${pad(Math.floor(ms / 60000) % 60)}:${pad(Math.floor(ms / 1000) % 60)}${decimal}${pad(ms % 1000, 3)}`;
}

function subtitles(segments, decimal, vtt) {
  const blocks = segments.map((s, i) =>
    `${vtt ? "" : `${i + 1}\n`}${clock(s.start, decimal)} --> ${clock(s.end, decimal)}\n${s.text}\n`);
  return (vtt ? "WEBVTT\n\n" : "") + blocks.join("\n");
}

function offer(id, name, extension, content) {
  const link = $(id);
  if (link.href) URL.revokeObjectURL(link.href);
  link.href = URL.createObjectURL(new Blob([content], { type: "text/plain" }));
  link.download = `${name.replace(/\.[^.]*$/, "")}.${extension}`;
}

// -- wiring ----------------------------------------------------------------------------------------

$("talk").addEventListener("click", () => (talk.running ? stopTalk() : startTalk()));
$("api-key").addEventListener("change", () => sessionStorage.setItem("sasr-api-key", apiKey()));
$("file").addEventListener("change", (event) => event.target.files[0] && upload(event.target.files[0]));
const drop = $("drop");
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  if (event.dataTransfer.files[0]) upload(event.dataTransfer.files[0]);
});
loadInfo();
