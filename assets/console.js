// The operator console's live page: applies /console/events (Server-Sent Events) to the table
// the server rendered. Plain JavaScript, no framework, no build step. Text is only ever set
// with textContent (never innerHTML), so transcript text cannot become markup.
"use strict";

(function () {
  const table = document.getElementById("live-calls");
  if (!table) return;
  const empty = document.getElementById("no-live-calls");
  const actions = document.getElementById("call-actions");

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function group(sid) {
    return table.querySelector('tbody.call[data-call-sid="' + CSS.escape(sid) + '"]');
  }

  function refreshEmpty() {
    if (empty) empty.hidden = table.querySelector("tbody.call") !== null;
  }

  function ensure(sid, data) {
    let g = group(sid);
    if (g) return g;
    g = el("tbody", "call");
    g.dataset.callSid = sid;
    const row = el("tr");
    row.dataset.callSid = sid;
    row.append(el("td", "from", data.from || ""), el("td", "to", data.to || ""),
      el("td", "direction", data.direction || ""));
    const duration = el("td", "duration", "0:00");
    duration.dataset.startedAt = String(Date.parse(data.started_at || "") || Date.now());
    row.append(duration, el("td", "state", data.state || "talking"));
    const cell = el("td", "actions");
    if (actions) {
      const copy = actions.content.cloneNode(true);
      copy.querySelectorAll("form").forEach(function (f) {
        f.action = f.action.replace("/calls/CA/", "/calls/" + encodeURIComponent(sid) + "/");
      });
      cell.append(copy);
    }
    row.append(cell);
    const trow = el("tr", "transcript-row");
    const td = el("td");
    td.colSpan = 6;
    const transcript = el("div", "transcript");
    transcript.dataset.callSid = sid;
    td.append(transcript);
    trow.append(td);
    g.append(row, trow);
    table.append(g);
    refreshEmpty();
    return g;
  }

  function transcriptOf(sid) {
    return ensure(sid, {}).querySelector(".transcript");
  }

  function turn(role, text, interim) {
    const t = el("div", interim ? "turn interim" : "turn");
    t.dataset.role = role;
    t.append(el("span", "speaker", role), el("span", "text", text));
    return t;
  }

  const handlers = {
    "call.started": function (d) {
      const g = ensure(d.call_sid, d);
      g.querySelector("td.state").textContent = d.state || "talking";
    },
    "call.state": function (d) {
      ensure(d.call_sid, d).querySelector("td.state").textContent = d.state;
    },
    "transcript.interim": function (d) {
      const box = transcriptOf(d.call_sid);
      const old = box.querySelector('.turn.interim[data-role="' + CSS.escape(d.speaker) + '"]');
      const t = turn(d.speaker, d.text, true);
      if (old) old.replaceWith(t); else box.append(t);
    },
    "transcript.final": function (d) {
      const box = transcriptOf(d.call_sid);
      const old = box.querySelector('.turn.interim[data-role="' + CSS.escape(d.speaker) + '"]');
      if (old) old.remove();
      box.append(turn(d.speaker, d.text, false));
    },
    "call.barge_in": function (d) {
      transcriptOf(d.call_sid).append(el("div", "barge-in", "caller interrupted"));
    },
    "tool.called": function (d) {
      const t = el("div", "turn");
      t.dataset.role = "tool";
      const call = el("div", "tool-call");
      call.dataset.callId = d.call_id;
      call.append(el("span", "tool-name", d.tool), el("code", "tool-args", JSON.stringify(d.arguments)));
      t.append(el("span", "speaker", "tool"), call);
      transcriptOf(d.call_sid).append(t);
    },
    "tool.result": function (d) {
      const box = transcriptOf(d.call_sid);
      let call = box.querySelector('.tool-call[data-call-id="' + CSS.escape(d.call_id) + '"]');
      if (!call) {
        handlers["tool.called"]({ call_sid: d.call_sid, call_id: d.call_id, tool: d.tool, arguments: null });
        call = box.querySelector('.tool-call[data-call-id="' + CSS.escape(d.call_id) + '"]');
      }
      call.append(el("code", "tool-result", JSON.stringify(d.output)));
    },
    "call.ended": function (d) {
      const g = group(d.call_sid);
      if (g) g.remove();
      refreshEmpty();
    },
    "resync": function () {
      window.location.reload();
    },
  };

  const source = new EventSource("/console/events");
  Object.keys(handlers).forEach(function (name) {
    source.addEventListener(name, function (e) {
      let data;
      try { data = JSON.parse(e.data); } catch (_) { return; }
      handlers[name](data);
    });
  });

  function pad(n) { return n < 10 ? "0" + n : String(n); }
  setInterval(function () {
    table.querySelectorAll("td.duration[data-started-at]").forEach(function (td) {
      const s = Math.max(0, Math.floor((Date.now() - Number(td.dataset.startedAt)) / 1000));
      td.textContent = s >= 3600
        ? Math.floor(s / 3600) + ":" + pad(Math.floor(s / 60) % 60) + ":" + pad(s % 60)
        : Math.floor(s / 60) + ":" + pad(s % 60);
    });
  }, 1000);
})();
