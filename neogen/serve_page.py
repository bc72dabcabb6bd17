"""The one-page form `neogen serve` answers at `/`: a text box, and the label probabilities as bars.

Kept as a Python string so that it ships inside the package with no package-data settings. The page loads nothing
from elsewhere; it posts to `/v1/classify` and draws the answer with textContent only (a label or text is never
parsed as HTML). `/?text=...` fills the box and classifies at once, which the screenshot check uses.
"""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>neogen: {name}</title>
<style>
  body { font-family: system-ui, sans-serif; max-width: 44rem; margin: 2rem auto; padding: 0 1rem; color: #1d232a; }
  h1 { font-size: 1.4rem; margin-bottom: 0.2rem; }
  .sub { color: #5b6570; margin-top: 0; }
  textarea { width: 100%; box-sizing: border-box; font: inherit; padding: 0.5rem; min-height: 6rem; }
  button { font: inherit; padding: 0.4rem 1.2rem; margin-top: 0.5rem; cursor: pointer; }
  #answer { font-size: 1.2rem; margin: 1.2rem 0 0.6rem; font-weight: 600; }
  .row { display: grid; grid-template-columns: 10rem 1fr 4.5rem; align-items: center; gap: 0.6rem; margin: 0.3rem 0; }
  .name { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
  .track { background: #e8ecf0; border-radius: 3px; height: 1.1rem; }
  .bar { background: #3b82c4; border-radius: 3px; height: 100%; }
  .bar.chosen { background: #1f9d55; }
  .value { text-align: right; font-variant-numeric: tabular-nums; }
  #mass, #error { color: #5b6570; margin-top: 0.8rem; }
  #error { color: #b42318; }
</style>
</head>
<body>
<h1>neogen: {name}</h1>
<p class="sub">{kind} over {count} labels. Type a text and press Classify (or Ctrl+Enter).</p>
<form id="form">
  <textarea id="text" name="text" placeholder="A text to classify" autofocus></textarea>
  <button type="submit">Classify</button>
</form>
<div id="answer"></div>
<div id="bars"></div>
<div id="mass"></div>
<div id="error"></div>
<script>
const form = document.getElementById("form"), box = document.getElementById("text");
function show(result) {
  const chosen = new Set(result.labels || [result.label]);
  document.getElementById("answer").textContent =
    result.labels ? "Labels: " + (result.labels.join(", ") || "(none)") : "Label: " + result.label;
  const bars = document.getElementById("bars");
  bars.replaceChildren();
  const scores = Object.entries(result.scores).sort((a, b) => b[1] - a[1]);
  for (const [label, p] of scores) {
    const row = document.createElement("div"); row.className = "row";
    const name = document.createElement("div"); name.className = "name"; name.textContent = label; name.title = label;
    const track = document.createElement("div"); track.className = "track";
    const bar = document.createElement("div"); bar.className = chosen.has(label) ? "bar chosen" : "bar";
    bar.style.width = (100 * p).toFixed(1) + "%";
    track.appendChild(bar);
    const value = document.createElement("div"); value.className = "value";
    value.textContent = (100 * p).toFixed(1) + "%";
    row.append(name, track, value);
    bars.appendChild(row);
  }
  document.getElementById("mass").textContent = result.label_mass === undefined ? "" :
    "label_mass " + result.label_mass.toFixed(4) + " (near 1 for texts like the training data)";
}
async function classify() {
  document.getElementById("error").textContent = "";
  try {
    const response = await fetch("v1/classify", {method: "POST", headers: {"Content-Type": "application/json"},
                                                 body: JSON.stringify({text: box.value})});
    const body = await response.json();
    if (!response.ok) throw new Error(body.error ? body.error.message : response.statusText);
    show(body);
  } catch (e) {
    document.getElementById("error").textContent = "error: " + e.message;
  }
}
form.addEventListener("submit", (e) => { e.preventDefault(); classify(); });
box.addEventListener("keydown", (e) => { if (e.key === "Enter" && e.ctrlKey) classify(); });
const given = new URLSearchParams(location.search).get("text");
if (given !== null) { box.value = given; classify(); }
</script>
</body>
</html>
"""
