// Every call to /v1: the signed-in key, the beta header, OpenAI's error envelope turned into an
// exception, and streamed runs read as server-sent events from a fetch() body (EventSource cannot POST).

const KEY = "threadline.console.key";

export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

// Set by app.js: what to do when the server refuses the key.
export const hooks = { unauthorized: (_message) => {} };

export function signedIn() {
  return sessionStorage.getItem(KEY) !== null;
}

export function signIn(key) {
  sessionStorage.setItem(KEY, key);
}

export function signOut() {
  sessionStorage.removeItem(KEY);
}

function request(method, path, body) {
  const headers = {
    Authorization: `Bearer ${sessionStorage.getItem(KEY) || ""}`,
    "OpenAI-Beta": "assistants=v2",
  };
  const init = { method, headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  return fetch(`/v1${path}`, init);
}

async function failure(response) {
  let message = `${response.status} ${response.statusText}`;
  try {
    const data = await response.json();
    if (data && data.error && data.error.message) message = data.error.message;
  } catch {
    // not JSON: keep the status line
  }
  if (response.status === 401) {
    signOut();
    hooks.unauthorized(message);
  }
  return new ApiError(message, response.status);
}

export async function api(method, path, body) {
  const response = await request(method, path, body);
  if (!response.ok) throw await failure(response);
  return response.json();
}

export const get = (path) => api("GET", path);
export const post = (path, body) => api("POST", path, body ?? {});

export function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") search.append(name, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

// POSTs a body with "stream": true and calls onEvent(name, data) for each event until `done`.
export async function stream(path, body, onEvent) {
  const response = await request("POST", path, { ...body, stream: true });
  if (!response.ok) throw await failure(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value.replace(/\r\n/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const event = parseFrame(frame);
      if (!event) continue;
      if (event.name === "done") return;
      onEvent(event.name, event.data);
    }
  }
}

function parseFrame(frame) {
  let name = "message";
  const data = [];
  for (const line of frame.split("\n")) {
    if (line.startsWith("event:")) name = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
  }
  if (!data.length) return null;
  const text = data.join("\n");
  return { name, data: text === "[DONE]" ? null : JSON.parse(text) };
}
