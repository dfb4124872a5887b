// The dashboard's pages: each fetches its JSON from /api/PAGE and draws it. Routing is by the URL
// hash (#/overview, #/samples?decision=kept&page=2) so every view has a link.
"use strict";

const PAGES = {
  overview: ["Overview", renderOverview], crawl: ["Crawl", renderCrawl], metaclip: ["MetaCLIP", renderMetaclip],
  score: ["CLIP score", renderScore], neardup: ["Near-dups", renderNeardup],
  resampling: ["Debias & languages", renderResampling], training: ["Training", renderTraining],
  samples: ["Sample browser", renderSamples],
};

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v); else el.setAttribute(k, v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) el.append(c instanceof Node ? c : String(c));
  return el;
}

const pct = v => (v === null || v === undefined) ? "–" : (100 * v).toFixed(1) + "%";

async function getJSON(url) {
  const response = await fetch(url);
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function cards(items) {
  return h("div", {class: "cards"}, items.map(([label, value, id]) =>
    h("div", {class: "card"}, h("div", {class: "card-value", "data-stat": id || label}, value), h("div", {class: "card-label"}, label))));
}

function table(headers, rows, attrs) {
  return h("table", attrs || {}, h("thead", {}, h("tr", {}, headers.map(x => h("th", {}, x)))),
           h("tbody", {}, rows.map(r => h("tr", {}, r.map(c => h("td", {}, c))))));
}

function section(title, ...content) { return h("section", {}, h("h2", {}, title), ...content); }

function missingNotes(list) {
  return (list || []).map(m => h("div", {class: "missing"}, h("b", {}, "Missing: "), m.what,
                                 " — produce it with ", h("code", {}, m.command)));
}

// Files the server could not read: their shards are left out of the page's numbers.
function unreadableNotes(list) {
  if (!list || !list.length) return [];
  return [h("div", {class: "missing", id: "unreadable"}, h("b", {}, `Unreadable (${list.length}, left out of the numbers): `),
            h("ul", {}, list.map(u => h("li", {}, `shard ${u.shard}: `, h("code", {}, u.file), ` — ${u.error}`))))];
}

function imageTile(s) {
  if (s.has_image && s.key) {
    const q = new URLSearchParams({shard: s.shard, key: s.key});
    return h("img", {src: `/api/image?${q}`, alt: s.text || s.key, loading: "eager"});
  }
  return h("div", {class: "no-image"}, "no image");
}

function sampleGrid(samples, describe) {
  if (!samples || !samples.length) return h("p", {class: "empty"}, "no samples");
  return h("div", {class: "grid"}, samples.map(s => h("figure", {class: "sample" + (s.kept === false ? " dropped" : "")},
    imageTile(s), h("figcaption", {}, h("div", {class: "text"}, s.text || "(no text)"),
                    h("div", {class: "meta"}, describe ? describe(s) : s.key)))));
}

function drops(counts) {
  const entries = Object.entries(counts || {});
  return entries.length ? entries.map(([k, v]) => `${k}: ${fmt(v)}`).join(", ") : "–";
}

function renderOverview(d) {
  const out = [h("p", {class: "run"}, "Run: ", h("code", {}, d.run)), ...missingNotes(d.missing)];
  if (!d.stages.length) return out;
  out.push(section("Funnel", barChart(d.funnel.map(s => ({label: s.label, value: s.rows})), {width: 900, labelWidth: 230}),
    h("p", {class: "note"}, "Balancing, scoring and near-dup removal each judge the whole pool; " +
      "the sample browser shows each sample's combined decision.")));
  out.push(section("Stages", table(
    ["stage", "shards", "rows in", "rows out", "dropped", "drops by reason", "errors", "wall s", "rows/s"],
    d.stages.map(s => [s.stage, fmt(s.shards), fmt(s.rows_in), fmt(s.rows_out), fmt(s.dropped), drops(s.drops),
                       drops(s.errors), fmt(s.wall_seconds), fmt(s.rows_per_second)]), {id: "stage-table"})));
  out.push(section("Time per stage", barChart(d.stages.map(s => ({label: s.stage, value: s.wall_seconds,
    text: `${fmt(s.wall_seconds)} s`})), {width: 900, labelWidth: 180})));
  for (const s of d.stages) {
    const extras = Object.entries(s.extra || {});
    if (!extras.length) continue;
    out.push(h("details", {}, h("summary", {}, `${s.stage}: stage numbers (${extras.length})`),
      table(["key", "sum over shards", "every shard"], extras.map(([k, v]) => [k, fmt(v.sum), v.value === null ? "varies" : String(v.value)]))));
  }
  if (d.absent_stages.length) out.push(h("p", {class: "note"}, "Not run yet: " + d.absent_stages.join(", ")));
  return out;
}

function renderCrawl(d) {
  const out = missingNotes(d.missing);
  if (d.rows === undefined) return out;
  out.push(cards([["samples tried", fmt(d.rows), "rows"], ["downloaded", fmt(d.success), "success"],
                  ["success rate", pct(d.success_rate), "success_rate"], ["hosts", fmt(d.hosts), "hosts"]]));
  out.push(section("Status", barChart(Object.entries(d.status).map(([k, v]) => ({label: k, value: v})))));
  out.push(section("Failures by reason", barChart(Object.entries(d.failures_by_reason).map(([k, v]) =>
    ({label: k, value: v, color: "#d1603d"})))));
  out.push(section("Hosts with most failures", table(["host", "tried", "downloaded", "failed", "success rate"],
    d.top_failing_hosts.map(x => [x.host, fmt(x.rows), fmt(x.success), fmt(x.failed), pct(x.success / x.rows)]))));
  out.push(section("Largest hosts", table(["host", "tried", "downloaded", "success rate"],
    d.top_hosts.map(x => [x.host, fmt(x.rows), fmt(x.success), pct(x.success / x.rows)]))));
  out.push(h("div", {class: "row"},
    section("Original size (longer side, px)", columnChart(d.side_histogram, {width: 440})),
    section("Aspect ratio (width / height)", columnChart(d.aspect_histogram, {width: 440}))));
  const stats = d.download_stats;
  if (stats) {
    out.push(section("Download stage errors", h("p", {}, drops(stats.errors)),
      table(["kind", "where", "message"], stats.error_examples.map(e => [e.kind, e.where, e.message]))));
  }
  return out;
}

async function renderMetaclip(d) {
  const out = missingNotes(d.missing);
  if (d.entries === undefined) return out;
  out.push(cards([["entries matched", fmt(d.matched_entries), "matched_entries"],
    ["t", fmt(d.t), "t"], ["matches before", fmt(d.matches_before), "matches_before"],
    ["matches after", fmt(d.matches_after), "matches_after"],
    ["head share before → after", `${pct(d.head_share_before)} → ${pct(d.head_share_after)}`, "head_share"],
    ["tail share before → after", `${pct(d.tail_share_before)} → ${pct(d.tail_share_after)}`, "tail_share"]]));
  out.push(section("Matches per entry, by rank (log–log)", lineChart({before: d.curve_before, after: d.curve_after},
    {logX: true, logY: true, width: 900, height: 300, xLabel: "entry rank",
     hLines: d.t === null ? [] : [{y: d.t, label: `t = ${fmt(d.t)}`}]})));
  const top = rows => table(["entry", "id", "before", "after"], rows.map(e => [e.name, String(e.entry), fmt(e.before), fmt(e.after)]));
  out.push(h("div", {class: "row"}, section("Top entries before balancing", top(d.top_before)),
                                     section("Top entries after balancing", top(d.top_after))));
  const results = h("div", {id: "search-results"});
  const input = h("input", {type: "search", id: "entry-search", placeholder: "an entry, e.g. " + (d.top_before[0] || {}).name});
  const search = async () => {
    const r = await getJSON(`/api/metaclip/search?${new URLSearchParams({q: input.value})}`);
    results.replaceChildren(r.entry ? h("p", {}, `“${r.entry.name}” (id ${r.entry.entry}): ${fmt(r.entry.count)} matches`)
                                    : h("p", {}, `no entry matches “${r.query}”`),
                            sampleGrid(r.samples, s => (s.kept ? "kept" : "not sampled") + " · " + s.key));
    await imagesLoaded(results);
  };
  out.push(section("Search an entry", h("form", {onsubmit: e => { e.preventDefault(); search(); }}, input,
                                         h("button", {type: "submit"}, "Show samples")), results));
  return out;
}

function renderScore(d) {
  const out = missingNotes(d.missing);
  if (!d.histogram) return out;
  out.push(cards([["scored", fmt(d.rows), "rows"], ["threshold", fmt(d.threshold), "threshold"],
    ["at or above", fmt(d.above), "above"], ["below", fmt(d.below), "below"], ["kept", fmt(d.kept), "kept"]]));
  const e = d.histogram.edges, bw = e[1] - e[0];
  const bins = d.histogram.counts.map((c, i) => ({count: c, label: fmt(+e[i].toFixed(3)),
                                                  color: d.threshold !== null && e[i] + bw <= d.threshold ? "#bbb" : "#3b6ea8"}));
  out.push(section(`Score histogram (${d.column})`, columnChart(bins, {width: 900, xLabel: "CLIP score",
    marker: d.threshold === null ? null : {index: (d.threshold - e[0]) / bw, label: `threshold ${fmt(d.threshold)}`}})));
  out.push(h("p", {class: "note"}, "threshold from: " + d.threshold_source +
    (d.basic_rules ? " · basic rules: " + drops(d.basic_rules) : "")));
  const describe = s => `score ${fmt(s.score)} · ${s.key}`;
  out.push(section("Just above the threshold", sampleGrid(d.just_above, describe)));
  out.push(section("Just below the threshold", sampleGrid(d.just_below, describe)));
  return out;
}

function renderNeardup(d) {
  const out = missingNotes(d.missing);
  if (d.clusters === undefined) return out;
  out.push(cards([["samples", fmt(d.rows), "rows"], ["clusters", fmt(d.clusters), "clusters"],
    ["in clusters", fmt(d.in_clusters), "in_clusters"], ["dropped as duplicates", fmt(d.dropped), "dropped"],
    ["near an eval image", fmt(d.contaminated), "contaminated"]]));
  const summary = d.summary || {};
  if (summary.pairs) {
    out.push(h("p", {class: "note", id: "neardup-summary"}, "pairs found by signal: " + drops(summary.pairs) +
      ` · eval images compared: ${fmt(summary.eval_images)}`));
  }
  out.push(section("Cluster sizes", barChart(d.size_histogram.map(x => ({label: `${x.size} members`, value: x.clusters})))));
  out.push(section("Largest clusters", ...d.top_clusters.map(c => h("div", {class: "cluster"},
    h("h3", {}, `cluster ${c.cluster} · ${fmt(c.size)} members`),
    sampleGrid(c.members, s => (s.kept ? "kept" : "dropped") + " · " + s.key)))));
  out.push(section("Near an evaluation image", sampleGrid(d.contaminated_samples, s => `near ${s.nearest_eval} · ${s.key}`)));
  return out;
}

function renderResampling(d) {
  const out = missingNotes(d.missing);
  const shares = m => Object.entries(m || {}).map(([k, v]) => `${k} ${pct(v)}`).join(" · ");
  const b = d.debias;
  if (b) {
    out.push(section(`De-biasing (${b.attribute})`, cards([
      ["association before", b.association_before.toFixed(3), "association_before"],
      ["association after", b.association_after.toFixed(3), "association_after"],
      ["target", fmt(b.target), "association_target"], ["rows kept", pct(b.kept_share), "debias_kept_share"]]),
      h("p", {class: "note", id: "debias-representation"}, `representation ${shares(b.representation_before)} → ` +
        `${shares(b.representation_after)} (target ${shares(b.target_representation)})` +
        (b.relaxation ? ` · targets relaxed to fit the drop bound (${b.relaxation.toFixed(3)})` : "")),
      h("p", {class: "note"}, "association of a concept = max over values of |P(value | concept) − P(value)|; grey: before, blue: after"),
      barChart(b.top_concepts.map(c => ({label: c.text, value: c.association_after, ghost: c.association_before,
                                         text: `${c.association_before.toFixed(3)} → ${c.association_after.toFixed(3)}`}))),
      table(["concept", "rows before", "rows after", "shares before", "shares after"],
            b.top_concepts.map(c => [c.text, fmt(c.rows_before), fmt(c.rows_after), shares(c.shares_before), shares(c.shares_after)]),
            {id: "debias-concepts"})));
  }
  const m = d.langmix;
  if (m) {
    out.push(section("Language mixture", cards([["rows kept", pct(m.kept_share), "langmix_kept_share"],
      ["bound by", m.binding.join(", ") || "–", "langmix_binding"]]),
      barChart(Object.keys(m.target).map(k => ({label: k, value: m.achieved[k], ghost: m.target[k],
                                                 text: `${pct(m.achieved[k])} (target ${pct(m.target[k])})`}))),
      table(["group", "target", "achieved", "rows before", "rows kept"],
            Object.keys(m.target).map(k => [k, pct(m.target[k]), pct(m.achieved[k]), fmt(m.rows_before[k]), fmt(m.rows_kept[k])]),
            {id: "langmix-shares"}),
      h("p", {class: "note"}, `languages from: ${m.lang_source.join(", ")} · applied after: ${m.after.join(", ") || "nothing"}` +
        (m.no_rows.length ? ` · no rows at all for ${m.no_rows.join(", ")}` : ""))));
  }
  return out;
}

function renderTraining(d) {
  const out = missingNotes(d.missing);
  if (d.runs.length > 1) {  // e.g. make demo's two rounds: train_round0/ and train/
    const select = h("select", {id: "training-run", onchange: e => { location.hash = `#/training?run=${encodeURIComponent(e.target.value)}`; }},
      d.runs.map(r => h("option", {value: r}, r)));
    select.value = d.run;
    out.push(h("div", {class: "pager"}, "Curves of: ", select));
  }
  if (d.steps !== undefined) {
    const last = d.last || {};
    out.push(cards([["logged steps", fmt(d.steps), "steps"], ["last step", fmt(last.step), "last_step"],
      ["last loss", fmt(last.loss), "last_loss"], ["phases", d.phases.map(p => p.phase).join(" → ") || "–", "phases"]]));
    // A phase's band runs to where the next one starts (or to its own last step).
    const bands = d.phases.map((p, i) => ({x0: p.first_step, x1: i + 1 < d.phases.length ? d.phases[i + 1].first_step : p.last_step,
                                           label: `phase ${p.phase}`, odd: i % 2 === 1}));
    for (const c of d.charts) {
      out.push(section(`${c.title} · ${d.run}`, lineChart(c.series, {width: 900, height: 240, bands, xLabel: "step"})));
    }
    if (d.bad_lines) out.push(h("p", {class: "note"}, `${d.bad_lines} unreadable log lines skipped`));
  }
  if (d.evals.length) {
    // One column per report (every run's, e.g. both demo rounds), one row per metric.
    const good = d.evals.filter(e => !e.error);
    const metrics = [...new Set(good.flatMap(e => Object.keys(e.metrics)))].sort();
    out.push(section("Evaluation results",
      ...d.evals.filter(e => e.error).map(e => h("p", {class: "missing"}, `${e.file}: ${e.error}`)),
      good.length ? table(["metric", ...good.map(e => e.file)],
                          metrics.map(m => [m, ...good.map(e => m in e.metrics ? fmt(e.metrics[m]) : "–")]),
                          {id: "eval-table"}) : null));
  }
  return out;
}

async function renderSamples(d, params) {
  const out = missingNotes(d.missing);
  if (!d.samples || !d.counts || (d.missing || []).length) return out;
  const go = (decision, page) => { location.hash = `#/samples?${new URLSearchParams({decision, page})}`; };
  const select = h("select", {id: "decision", onchange: e => go(e.target.value, 0)},
    [["all", Object.values(d.counts).reduce((a, b) => a + b, 0)], ["kept", d.counts.kept || 0],
     ["dropped", Object.entries(d.counts).filter(([k]) => k !== "kept").reduce((a, [, v]) => a + v, 0)],
     ...Object.entries(d.counts).filter(([k]) => k !== "kept")]
      .map(([k, v]) => h("option", {value: k}, `${k} (${fmt(v)})`)));
  select.value = d.decision;
  const nav = h("div", {class: "pager"}, "Decision: ", select,
    h("button", {id: "prev", onclick: () => go(d.decision, d.page - 1), ...(d.page <= 0 ? {disabled: ""} : {})}, "‹ prev"),
    h("span", {id: "page-info"}, `page ${fmt(d.page + 1)} of ${fmt(Math.max(d.pages, 1))} · ${fmt(d.total)} samples`),
    h("button", {id: "next", onclick: () => go(d.decision, d.page + 1), ...(d.page + 1 >= d.pages ? {disabled: ""} : {})}, "next ›"));
  out.push(nav, h("p", {class: "note"}, "curation stages applied: " + ((d.applied || []).join(", ") || "none")));
  out.push(sampleGrid(d.samples.map(s => ({...s, kept: s.decision === "kept"})), s => {
    const score = Object.entries(s).filter(([k]) => k.startsWith("clip_score_")).map(([k, v]) => `${k.slice(11)} ${fmt(v)}`);
    return [s.decision, ...score, s.dup_cluster >= 0 && s.dup_cluster !== undefined ? `cluster ${s.dup_cluster}` : null,
            s.metaclip_entries ? `${s.metaclip_entries.length} entries` : null, s.key].filter(Boolean).join(" · ");
  }));
  return out;
}

function imagesLoaded(root) {
  return Promise.all([...root.querySelectorAll("img")].map(img => img.complete ? null :
    new Promise(resolve => { img.addEventListener("load", resolve); img.addEventListener("error", resolve); })));
}

async function route() {
  const [name, query] = (location.hash.replace(/^#\/?/, "") || "overview").split("?");
  const page = PAGES[name] ? name : "overview";
  const params = new URLSearchParams(query || "");
  document.body.removeAttribute("data-ready");
  document.querySelectorAll("nav a").forEach(a => a.classList.toggle("active", a.dataset.page === page));
  const main = document.getElementById("main");
  main.replaceChildren(h("p", {class: "loading"}, "loading…"));
  try {
    const api = page === "samples" ? `/api/samples?${new URLSearchParams({decision: params.get("decision") || "all",
                                                                          page: params.get("page") || 0})}`
              : page === "training" && params.get("run") ? `/api/training?${new URLSearchParams({run: params.get("run")})}`
              : `/api/${page}`;
    const data = await getJSON(api);
    const content = await PAGES[page][1](data, params);
    main.replaceChildren(h("h1", {}, PAGES[page][0]), ...unreadableNotes(data.unreadable), ...content);
    await imagesLoaded(main);
  } catch (err) {
    main.replaceChildren(h("h1", {}, PAGES[page][0]), h("div", {class: "missing"}, "Could not load this page: " + err.message));
    console.error(err);
  }
  document.body.dataset.route = location.hash;  // which view the page shows once ready (for tests)
  document.body.dataset.ready = page;
}

document.addEventListener("DOMContentLoaded", () => {
  const nav = document.getElementById("nav");
  for (const [key, [title]] of Object.entries(PAGES)) nav.append(h("a", {href: `#/${key}`, "data-page": key}, title));
  window.addEventListener("hashchange", route);
  route();
});
