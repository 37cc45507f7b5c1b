// The console's entry point: sign-in, the navigation bar and a hash router that draws one pane at a time.

import { get, hooks, signIn, signOut, signedIn } from "./api.js";
import { errorBox, h, replace } from "./dom.js";
import { assistantsPane } from "./assistants.js";
import { chatPane } from "./chat.js";
import { runPane } from "./timeline.js";
import { storePane, storesPane } from "./stores.js";
import { threadPane, threadsPane } from "./threads.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
let notice = "";

const routes = [
  [/^#\/assistants(?:\/([^/]+))?$/, (m) => assistantsPane(m[1])],
  [/^#\/threads$/, () => threadsPane()],
  [/^#\/threads\/([^/]+)$/, (m) => threadPane(m[1])],
  [/^#\/threads\/([^/]+)\/runs\/([^/]+)$/, (m) => runPane(m[1], m[2])],
  [/^#\/chat(?:\/([^/]+))?(?:\/([^/]+))?$/, (m) => chatPane(m[1], m[2])],
  [/^#\/vector_stores$/, () => storesPane()],
  [/^#\/vector_stores\/([^/]+)$/, (m) => storePane(m[1])],
];

hooks.unauthorized = (message) => {
  notice = `The server refused your key (401: ${message}) Sign in again.`;
  if (location.hash === "#/sign-in") route();
  else location.hash = "#/sign-in"; // the hashchange draws the sign-in pane
};

function signInPane() {
  const key = h("input", { id: "key", type: "password", autocomplete: "off", required: true });
  const status = h("p", { class: "error", role: "alert", id: "sign-in-error" }, notice);
  notice = "";
  const form = h(
    "form",
    { class: "card narrow", id: "sign-in" },
    h("h1", {}, "Sign in"),
    h("label", { for: "key" }, "API key"),
    key,
    h("p", { class: "muted" }, "A project's key (tl-…) or THREADLINE_API_KEY; any value works when the server is open. The key stays in this tab (sessionStorage)."),
    h("button", { type: "submit" }, "Sign in"),
    status,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    signIn(key.value);
    try {
      await get("/assistants?limit=1");
    } catch (error) {
      if (error.status !== 401) replace(status, error.message);
      return;
    }
    location.hash = "#/assistants";
  });
  return form;
}

let drawing = 0; // a pane still loading when the user moves on must not draw over the new one

async function route() {
  const drawn = ++drawing;
  const hash = location.hash || "#/assistants";
  if (!signedIn() || hash === "#/sign-in") {
    nav.hidden = true;
    replace(main, signInPane());
    document.getElementById("key").focus();
    return;
  }
  nav.hidden = false;
  for (const link of nav.querySelectorAll("a")) {
    link.classList.toggle("active", hash.startsWith(`#/${link.dataset.section}`));
  }
  for (const [pattern, pane] of routes) {
    const match = hash.match(pattern);
    if (match) {
      let content;
      try {
        content = await pane(match);
      } catch (error) {
        if (error.status === 401) return; // the unauthorized hook has taken over
        content = errorBox(error);
      }
      if (drawn === drawing) replace(main, content);
      return;
    }
  }
  location.hash = "#/assistants";
}

document.getElementById("sign-out").addEventListener("click", () => {
  signOut();
  location.hash = "#/sign-in";
});
window.addEventListener("hashchange", route);
route();
