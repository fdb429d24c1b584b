// The blind A/B review page: fetch the rater's next item, post a judgement, repeat.
// Untrusted text (questions, answers, passages) is only ever set with textContent.
"use strict";

const RATER_KEY = "metarag-review-rater";
const KEYS = { "1": "A", a: "A", "2": "B", b: "B", "3": "tie", t: "tie", "4": "both_wrong",
               w: "both_wrong" };
const $ = (id) => document.getElementById(id);
let rater = null;       // who is judging
let fixedRater = false; // the server was started with --rater
let current = null;     // the item on screen
let busy = false;       // a request is in flight: ignore further clicks and keys

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

async function api(path, options) {
  const response = await fetch(path, options);
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) {
    const detail = body && body.detail ? body.detail : response.statusText;
    throw new Error(`${response.status}: ${detail}`);
  }
  return body;
}

function fillPassages(list, passages) {
  list.replaceChildren();
  for (const p of passages || []) {
    const li = document.createElement("li");
    const id = document.createElement("span");
    id.className = "passage-id";
    id.textContent = `[${p.id}] `;
    li.append(id);
    if (p.title) {
      const title = document.createElement("strong");
      title.textContent = p.title + ". ";
      li.append(title);
    }
    li.append(document.createTextNode(p.text || "(passage text not saved in this run)"));
    list.append(li);
  }
}

function setBusy(value) {
  busy = value;
  document.body.dataset.state = value ? "busy" : (current ? "ready" : "done");
  for (const b of document.querySelectorAll("#buttons button")) b.disabled = value;
}

function showProgress(judged, total) {
  $("progress").textContent = `${judged} of ${total} judged`;
}

function render(item) {
  current = item;
  $("review").dataset.key = item.key;
  $("question").textContent = item.question;
  const refs = $("references");
  refs.replaceChildren();
  for (const r of item.references || []) {
    const li = document.createElement("li");
    li.textContent = r;
    refs.append(li);
  }
  $("references-box").hidden = !(item.references && item.references.length);
  $("references-box").open = false;
  $("passages-box").hidden = !item.passages;
  fillPassages($("passages"), item.passages);
  for (const answer of item.answers) {
    const box = $(`answer-${answer.label}`);
    $(`answer-${answer.label}-text`).textContent = answer.text || "(empty answer)";
    const own = box.querySelector(".own-passages");
    own.hidden = !answer.passages;
    own.open = true;
    fillPassages(own.querySelector("ol"), answer.passages);
  }
  $("comment").value = "";
  showProgress(item.judged, item.total);
  $("review").hidden = false;
  $("done").hidden = true;
  window.scrollTo(0, 0);
}

async function loadNext() {
  setBusy(true);
  try {
    const item = await api(`api/next?rater=${encodeURIComponent(rater)}`);
    showError("");
    if (item.done) {
      current = null;
      showProgress(item.judged, item.total);
      $("review").hidden = true;
      $("done").hidden = false;
    } else {
      render(item);
    }
  } catch (err) {
    showError(`Could not load the next question (${err.message}). Reload to retry.`);
  } finally {
    setBusy(false);
  }
}

async function choose(choice) {
  if (busy || !current) return;
  setBusy(true);
  try {
    await api("api/judgements", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ rater, key: current.key, choice, comment: $("comment").value }),
    });
  } catch (err) {
    showError(`Not saved (${err.message}).`);
    setBusy(false);
    return;
  }
  setBusy(false);
  await loadNext();
}

function showRater() {
  const who = $("who");
  who.replaceChildren(document.createTextNode(`· rater: ${rater}`));
  if (!fixedRater) {
    const change = document.createElement("a");
    change.href = "#";
    change.id = "change-rater";
    change.textContent = "change";
    change.addEventListener("click", (e) => {
      e.preventDefault();
      localStorage.removeItem(RATER_KEY);
      askName();
    });
    who.append(change);
  }
}

function askName() {
  $("review").hidden = true;
  $("done").hidden = true;
  $("name-form").hidden = false;
  $("name-input").focus();
}

function start(name) {
  rater = name;
  $("name-form").hidden = true;
  showRater();
  loadNext();
}

document.addEventListener("keydown", (e) => {
  const typing = e.target.matches && e.target.matches("textarea, input");
  if (typing) {
    if (e.key === "Escape") e.target.blur();
    return;
  }
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  const choice = KEYS[e.key.toLowerCase()];
  if (choice) {
    e.preventDefault();
    choose(choice);
  }
});

for (const button of document.querySelectorAll("#buttons button")) {
  // Blur so that a later Space or Enter does not click the focused button again.
  button.addEventListener("click", () => { button.blur(); choose(button.dataset.choice); });
}

$("name-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const name = $("name-input").value.trim();
  if (!name) return;
  localStorage.setItem(RATER_KEY, name);
  start(name);
});

(async () => {
  try {
    const config = await api("api/config");
    fixedRater = Boolean(config.rater);
    const name = config.rater || localStorage.getItem(RATER_KEY);
    if (name) start(name); else askName();
  } catch (err) {
    showError(`Could not reach the review server (${err.message}).`);
  }
})();
