// Building the page without ever parsing text as HTML: every string becomes a text node, so message
// text written by users or models cannot inject markup or script.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (name === "class") {
      el.className = value;
    } else if (name === "value") {
      el.value = value;
    } else if (value === true) {
      el.setAttribute(name, "");
    } else {
      el.setAttribute(name, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function time(seconds) {
  if (!seconds) return "—";
  return new Date(seconds * 1000).toLocaleString();
}

export function errorBox(error) {
  return h("p", { class: "error", role: "alert" }, error && error.message ? error.message : String(error));
}

export function metadataText(metadata) {
  const pairs = Object.entries(metadata || {});
  return pairs.length ? pairs.map(([k, v]) => `${k}=${v}`).join(", ") : "—";
}

// A message's text parts joined; other parts named in brackets.
export function messageText(message) {
  return (message.content || [])
    .map((part) => {
      if (part.type === "text") return part.text.value;
      if (part.type === "image_file") return `[image ${part.image_file.file_id}]`;
      if (part.type === "image_url") return `[image ${part.image_url.url}]`;
      return `[${part.type}]`;
    })
    .join("\n");
}

export function pretty(json) {
  try {
    return JSON.stringify(JSON.parse(json), null, 2);
  } catch {
    return json;
  }
}
