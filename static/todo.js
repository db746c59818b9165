// The todo page's script: everything it shows and changes goes through the JSON API of apps/todo_api.py.
// The page works without it too (plain forms, posted to the page itself); this script takes the add form over
// and replaces the server-drawn list with its own, so changes need no reload.
// Text from the server is only ever put into the page with textContent, never innerHTML, so a todo titled
// "<img onerror=...>" is shown as text, never run.
"use strict";

(() => {
  const root = document.getElementById("todo-app");
  const api = root.dataset.api;
  const form = document.getElementById("todo-form");
  const title = document.getElementById("todo-title");
  const error = document.getElementById("todo-error");
  const list = document.getElementById("todo-list");
  const empty = document.getElementById("todo-empty");

  // One API call. Answers with the parsed JSON body (null for 204); throws an Error carrying the API's own
  // message, and its per-field messages for a 422, when the status is not a success.
  async function call(method, url, body) {
    const options = { method, headers: { Accept: "application/json" } };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    const response = await fetch(url, options);
    const data = response.status === 204 ? null : await response.json();
    if (!response.ok) {
      const problem = new Error(data?.error?.description || `The server answered ${response.status}.`);
      problem.fields = data?.error?.fields || {};
      throw problem;
    }
    return data;
  }

  function showError(message) {
    error.textContent = message || "";
    error.hidden = !message;
    title.setAttribute("aria-invalid", message ? "true" : "false");
    title.closest(".field").classList.toggle("invalid", Boolean(message));
  }

  function item(todo) {
    const li = document.createElement("li");
    li.classList.toggle("done", todo.done);
    const box = document.createElement("input");
    box.type = "checkbox";
    box.id = `todo-${todo.id}`;
    box.checked = todo.done;
    box.addEventListener("change", () => run(() => call("PATCH", todo.url, { done: box.checked })));
    const label = document.createElement("label");
    label.htmlFor = box.id;
    label.textContent = todo.title;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "quiet danger";
    remove.textContent = "Delete";
    remove.setAttribute("aria-label", `Delete "${todo.title}"`);
    remove.addEventListener("click", () => run(() => call("DELETE", todo.url)));
    li.append(box, label, remove);
    return li;
  }

  async function refresh() {
    const { todos } = await call("GET", api);
    list.replaceChildren(...todos.map(item));
    empty.hidden = todos.length > 0;
  }

  // Make a change, then redraw the list from the server (the API, not this page, is the source of truth), then
  // say what went wrong, if anything: once a message shows, the list is final.
  async function run(change) {
    let message = "";
    try {
      await change();
    } catch (problem) {
      message = problem.fields?.title || problem.fields?.body || problem.message;
    }
    await refresh();
    showError(message);
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    run(async () => {
      await call("POST", api, { title: title.value });
      title.value = "";
    });
  });

  refresh().catch((problem) => showError(problem.message));
})();
