"""`mm-gpg view RUN_DIR`: one static HTML page that browses a run's rollouts (or an eval output
folder's predictions), written into the folder (`view.html`) and opened from disk: no server, no
network, no CDN. The data is embedded in the page as JSON; the images and plots are the folder's
own files, referred to by relative paths.

It shows, per group: the image, the question, the gold, the G answers with their reward,
components, advantage and finish reason; invalid groups (all rewards equal) and unparsable
answers are marked. Filters: step, kind (train / held-out eval), task or benchmark, reward, valid
or invalid, parse failures; they also read and write the page's URL fragment
(`view.html#valid=invalid&step=10`), so a filtered view can be bookmarked or opened headless.
Below: the run's diagnostic plots (`mm-gpg plot`). See docs/observability.md."""
from __future__ import annotations

import argparse
import html
import json
from pathlib import Path

from .metrics import read_records
from .plots import FIGURES, PLOTS_DIR
from .rollouts import ROLLOUTS_FILE

VIEW_FILE = "view.html"
EVAL_PREDICTIONS = "predictions.jsonl"


def _answers_from_rollout(record: dict) -> list[dict]:
    return [{"text": c.get("text", ""), "reward": c.get("reward"), "components": c.get("components") or {},
             "advantage": c.get("advantage"), "finish": c.get("finish_reason"),
             "parse_failure": bool(c.get("parse_failure"))} for c in record.get("completions", [])]


def items_from_run(run_dir: Path) -> list[dict]:
    """A training run's rollouts (train groups and held-out answers) as viewer items."""
    items = []
    for r in read_records(run_dir / ROLLOUTS_FILE):
        train = r.get("kind") == "train"
        items.append({"kind": "train" if train else "eval", "step": r.get("step"),
                      "n": r.get("group") if train else r.get("index"), "task": r.get("task") or "",
                      "question": r.get("question") or "", "gold": r.get("answer"), "choices": r.get("choices"),
                      "images": r.get("images") or [], "valid": r.get("valid") if train else None,
                      "draw": r.get("draw"), "in_batch": r.get("in_batch"), "alpha": r.get("alpha"),
                      "answers": _answers_from_rollout(r)})
    return items


def items_from_eval(eval_dir: Path) -> list[dict]:
    """An eval output folder's predictions (one item per sample, `task` = the benchmark)."""
    items = []
    for r in read_records(eval_dir / EVAL_PREDICTIONS):
        verdicts = r.get("verdicts") or []
        answers = [{"text": text, "reward": score, "components": {"accuracy": score}, "advantage": None,
                    "finish": (r.get("finish_reasons") or [None] * len(r["responses"]))[i],
                    "parse_failure": bool(i < len(verdicts) and (verdicts[i] or {}).get("parse_failure"))}
                   for i, (text, score) in enumerate(zip(r.get("responses") or [], r.get("scores") or []))]
        items.append({"kind": "eval", "step": None, "n": r.get("index"), "task": r.get("benchmark") or "",
                      "question": r.get("question") or "", "gold": r.get("gold"), "choices": r.get("choices"),
                      "images": [], "valid": None, "draw": None, "in_batch": None, "alpha": None,
                      "answers": answers, "error": r.get("error")})
    return items


def build_page(folder: Path) -> tuple[str, int]:
    """The page's HTML for a run folder or an eval output folder, and how many items it holds."""
    if (folder / ROLLOUTS_FILE).is_file():
        items, what = items_from_run(folder), "training run"
    elif (folder / EVAL_PREDICTIONS).is_file():
        items, what = items_from_eval(folder), "evaluation"
    else:
        raise FileNotFoundError(f"{folder}: neither {ROLLOUTS_FILE} (a training run with logging.rollouts_every > 0) "
                                f"nor {EVAL_PREDICTIONS} (an mm-gpg eval output folder)")
    plots = [f"{PLOTS_DIR}/{name}" for name, _, _ in FIGURES if (folder / PLOTS_DIR / name).is_file()]
    data = {"title": f"{folder.resolve().name} ({what})", "items": items, "plots": plots}
    # Inside <script>: "</" would end the element early, "<!--" would open a comment.
    payload = json.dumps(data, ensure_ascii=False, allow_nan=False).replace("</", "<\\/").replace("<!--", "<\\!--")
    page = PAGE.replace("__TITLE__", html.escape(data["title"])).replace("__DATA__", payload)
    return page, len(items)


def write_view(folder: str | Path, out: str | Path | None = None) -> Path:
    from data_prep.files import write_text_atomic
    folder = Path(folder)
    page, _ = build_page(folder)
    path = Path(out) if out is not None else folder / VIEW_FILE
    write_text_atomic(path, page)
    return path


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mm-gpg view",
                                     description="write a static HTML page browsing a run's rollouts or an eval's predictions")
    parser.add_argument("folder", help="a training run folder (rollouts.jsonl) or an mm-gpg eval output folder")
    parser.add_argument("--out", help=f"the page (default: FOLDER/{VIEW_FILE}; keep it in FOLDER so its images load)")
    args = parser.parse_args(argv)
    path = write_view(args.folder, args.out)
    print(f"wrote {path}: open it in a browser (file://{path.resolve()})")
    return 0


PAGE = r"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src 'self' file: data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>__TITLE__</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f6f6f4;color:#222}
header{position:sticky;top:0;background:#fff;border-bottom:1px solid #ccc;padding:8px 16px;z-index:1}
header h1{font-size:16px;margin:0 0 6px}
label{margin-right:12px;font-size:13px}
main{padding:12px 16px}
.group{background:#fff;border:1px solid #ccc;border-left:6px solid #3a7;border-radius:4px;margin:0 0 12px;padding:8px 12px;display:flex;gap:12px}
.group.invalid{border-left-color:#c44;background:#fff8f8}
.group.eval{border-left-color:#47c}
.group img{max-width:200px;max-height:200px;border:1px solid #ddd}
.meta{font-size:12px;color:#555}
.badge{display:inline-block;padding:0 6px;border-radius:8px;font-size:11px;margin-left:4px;background:#eee}
.badge.invalid{background:#c44;color:#fff}.badge.valid{background:#3a7;color:#fff}
table{border-collapse:collapse;width:100%;margin-top:6px;font-size:12px}
td,th{border-top:1px solid #eee;padding:2px 6px;text-align:left;vertical-align:top}
td.text{white-space:pre-wrap;font-family:ui-monospace,monospace;max-width:700px;word-break:break-word}
tr.rewarded td{background:#effaf0}tr.parsefail td.text{color:#a33}
.plots img{max-width:48%;margin:4px;border:1px solid #ccc;background:#fff}
#more{margin:8px 0}
</style></head>
<body>
<header><h1 id="title"></h1>
<label>step <select id="f-step"></select></label>
<label>kind <select id="f-kind"><option value="">all</option><option value="train">train</option><option value="eval">held-out / eval</option></select></label>
<label>task <select id="f-task"></select></label>
<label>reward <select id="f-reward"><option value="">any</option><option value="some">some answer rewarded</option><option value="none">no answer rewarded</option></select></label>
<label>groups <select id="f-valid"><option value="">all</option><option value="valid">valid</option><option value="invalid">invalid</option></select></label>
<label>parse <select id="f-parse"><option value="">any</option><option value="fail">with parse failures</option><option value="ok">without</option></select></label>
<span class="meta">showing <b id="shown">0</b> of <b id="total">0</b></span>
</header>
<main><div id="groups"></div><button id="more" hidden>show more</button>
<section class="plots" id="plots"><h2>diagnostic plots</h2></section></main>
<script type="application/json" id="data">__DATA__</script>
<script>
"use strict";
const DATA = JSON.parse(document.getElementById("data").textContent);
const PAGE = 200;
let limit = PAGE;
const $ = id => document.getElementById(id);
const FILTERS = ["step", "kind", "task", "reward", "valid", "parse"];
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
  return e;
}
function fmt(v) { return v === null || v === undefined ? "–" : (typeof v === "number" ? (Number.isInteger(v) ? v : v.toFixed(3)) : String(v)); }
function options(id, values) {
  const s = $(id); s.append(el("option", {value: ""}, "all"));
  for (const v of values) s.append(el("option", {value: String(v)}, String(v)));
}
function matches(it, f) {
  if (f.step !== "" && String(it.step) !== f.step) return false;
  if (f.kind && it.kind !== f.kind) return false;
  if (f.task && it.task !== f.task) return false;
  const rewarded = it.answers.some(a => (a.reward || 0) > 0);
  if (f.reward === "some" && !rewarded) return false;
  if (f.reward === "none" && rewarded) return false;
  if (f.valid === "valid" && it.valid !== true) return false;
  if (f.valid === "invalid" && it.valid !== false) return false;
  const parse = it.answers.some(a => a.parse_failure);
  if (f.parse === "fail" && !parse) return false;
  if (f.parse === "ok" && parse) return false;
  return true;
}
function card(it) {
  const cls = "group " + (it.kind === "eval" ? "eval" : (it.valid ? "valid" : "invalid"));
  const div = el("div", {class: cls, "data-step": fmt(it.step), "data-kind": it.kind, "data-task": it.task,
                         "data-valid": String(it.valid)});
  const pics = el("div", {});
  for (const src of it.images) pics.append(el("img", {src: src, alt: "image of " + it.task}));
  const body = el("div", {style: "flex:1"});
  const badge = it.kind === "eval" ? el("span", {class: "badge"}, "held-out")
    : el("span", {class: "badge " + (it.valid ? "valid" : "invalid")}, it.valid ? "valid" : "invalid: rewards all equal");
  const where = it.kind === "train"
    ? `step ${it.step} · group ${it.n} · draw ${it.draw} · ${it.in_batch ? "in the batch" : "not in the batch"} · alpha ${fmt(it.alpha)}`
    : (it.step === null ? `#${it.n}` : `step ${it.step} · problem ${it.n}`);
  body.append(el("div", {class: "meta"}, it.task, " · ", where, badge));
  body.append(el("div", {class: "question"}, it.question));
  let gold = "gold: " + JSON.stringify(it.gold);
  if (it.choices) gold += "   choices: " + it.choices.map((c, i) => String.fromCharCode(65 + i) + ". " + c).join("  ");
  body.append(el("div", {class: "meta gold"}, gold));
  if (it.error) body.append(el("div", {class: "meta"}, "error: " + it.error));
  const comps = [...new Set(it.answers.flatMap(a => Object.keys(a.components)))].sort();
  const table = el("table", {}, el("tr", {}, el("th", {}, "#"), el("th", {}, "reward"),
    ...comps.map(c => el("th", {}, c)), el("th", {}, "advantage"), el("th", {}, "finish"), el("th", {}, "answer")));
  it.answers.forEach((a, i) => {
    const rcls = "answer" + ((a.reward || 0) > 0 ? " rewarded" : "") + (a.parse_failure ? " parsefail" : "");
    table.append(el("tr", {class: rcls}, el("td", {}, i + 1), el("td", {}, fmt(a.reward)),
      ...comps.map(c => el("td", {}, fmt(a.components[c]))), el("td", {}, fmt(a.advantage)),
      el("td", {}, fmt(a.finish) + (a.parse_failure ? " · unparsed" : "")), el("td", {class: "text"}, a.text)));
  });
  body.append(table);
  div.append(pics, body);
  return div;
}
function current() {
  const f = {};
  for (const k of FILTERS) f[k] = $("f-" + k).value;
  return f;
}
function render(writeHash) {
  const f = current();
  const shown = DATA.items.filter(it => matches(it, f));
  const box = $("groups"); box.replaceChildren(...shown.slice(0, limit).map(card));
  $("shown").textContent = shown.length; $("total").textContent = DATA.items.length;
  $("more").hidden = shown.length <= limit;
  if (writeHash) {
    const h = new URLSearchParams(Object.entries(f).filter(([, v]) => v !== "")).toString();
    history.replaceState(null, "", h ? "#" + h : location.pathname);
  }
}
function readHash() {
  const h = new URLSearchParams(location.hash.slice(1));
  for (const k of FILTERS) if (h.has(k)) $("f-" + k).value = h.get(k);
}
$("title").textContent = DATA.title;
document.title = DATA.title;
options("f-step", [...new Set(DATA.items.map(it => it.step).filter(s => s !== null))].sort((a, b) => a - b));
options("f-task", [...new Set(DATA.items.map(it => it.task))].sort());
if (!DATA.items.some(it => it.kind === "train")) $("f-valid").disabled = true;
readHash();
for (const k of FILTERS) $("f-" + k).addEventListener("change", () => { limit = PAGE; render(true); });
$("more").addEventListener("click", () => { limit += PAGE; render(false); });
window.addEventListener("hashchange", () => { readHash(); render(false); });
for (const p of DATA.plots) $("plots").append(el("img", {src: p, alt: p}));
if (!DATA.plots.length) $("plots").hidden = true;
render(false);
</script></body></html>
"""
