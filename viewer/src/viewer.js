// The fal-mcp media viewer: shows the result of the tool call it belongs to (images, video, audio and
// what made them), follows a job handed off before it finished, and sends its actions back through
// the host to the server's own tools. It talks to nothing but the host: media arrive as the server's
// output resources (fal-mcp://outputs/<request id>/<n>), read through the host.
import { App, applyDocumentTheme, applyHostStyleVariables } from "@modelcontextprotocol/ext-apps";

const CHECK_WAIT_SECONDS = 5; // each check_job waits this long: progress is shown between waits
const $ = (id) => document.getElementById(id);
const app = new App({ name: "fal-mcp viewer", version: "1.0.0" }, {});
const view = {
  tool: null, // the tool whose result is shown (variations call it again)
  input: {}, // its arguments
  output: null, // its structured content (fal-mcp's GenerationOutput)
  files: [], // [{file, kind, url}] with url an object URL of the bytes read through the host
  selected: [], // indexes of selected images (the action target is the first; compare shows two)
  comparing: false,
  zoom: 1,
  following: null, // the job id being followed
};

function status(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

function textOf(result) {
  return (result?.content || []).filter((c) => c.type === "text").map((c) => c.text).join("\n");
}

function applyContext(context) {
  if (!context) return;
  if (context.theme) applyDocumentTheme(context.theme);
  if (context.styles?.variables) applyHostStyleVariables(context.styles.variables);
  const tool = context.toolInfo?.tool?.name;
  if (tool && !view.output) view.tool = tool;
}

// -- showing a result ---------------------------------------------------------------------------------

async function show(result, tool = view.tool, input = view.input) {
  const output = result?.structuredContent;
  if (result?.isError || !output || !Array.isArray(output.files)) {
    status(textOf(result) || "The call returned nothing to show.", Boolean(result?.isError));
    return;
  }
  view.tool = tool;
  view.input = input || {};
  if (output.job && output.files.length === 0) {
    view.output = output;
    meta(output);
    return follow(output.job.job_id);
  }
  $("job").hidden = true;
  status("Loading the media…");
  const files = await Promise.all(output.files.map((file, index) => load(output, file, index)));
  clear();
  view.output = output;
  view.files = files;
  view.selected = files.findIndex((f) => f.kind === "image") >= 0 ? [files.findIndex((f) => f.kind === "image")] : [];
  render();
  meta(output);
  status(summary(output));
}

function kindOf(file) {
  const type = file.content_type || "";
  if (type.startsWith("image/")) return "image";
  if (type.startsWith("video/")) return "video";
  if (type.startsWith("audio/")) return "audio";
  return "file";
}

async function load(output, file, index) {
  const kind = kindOf(file);
  const read = await app.readServerResource({ uri: `fal-mcp://outputs/${output.request_id}/${index}` });
  const content = read?.contents?.[0];
  if (!content?.blob) return { file, kind, url: null };
  const bytes = Uint8Array.from(atob(content.blob), (c) => c.charCodeAt(0));
  const blob = new Blob([bytes], { type: file.content_type || content.mimeType || "application/octet-stream" });
  return { file, kind, url: URL.createObjectURL(blob), bytes };
}

function clear() {
  for (const item of view.files) if (item.url) URL.revokeObjectURL(item.url);
  view.files = [];
  $("grid").replaceChildren();
  $("compare").replaceChildren();
  $("compare").hidden = true;
  $("video").hidden = true;
  $("video").removeAttribute("src");
  $("sound").hidden = true;
  $("audio").removeAttribute("src");
  view.comparing = false;
  $("compare-toggle").setAttribute("aria-pressed", "false");
}

function render() {
  view.files.forEach((item, index) => {
    if (item.kind === "image" && item.url) {
      const image = document.createElement("img");
      image.className = "thumb";
      image.src = item.url;
      image.alt = `Image ${index + 1}`;
      image.dataset.index = String(index);
      if (item.file.width && item.file.height) {
        image.width = item.file.width;
        image.height = item.file.height;
      }
      image.addEventListener("click", () => pick(index));
      $("grid").append(image);
    } else if (item.kind === "video" && item.url) {
      $("video").src = item.url;
      $("video").hidden = false;
    } else if (item.kind === "audio" && item.url) {
      $("audio").src = item.url;
      $("sound").hidden = false;
      waveform(item.bytes).catch((error) => status(`The waveform could not be drawn: ${error.message}`));
    }
  });
  const images = view.files.filter((f) => f.kind === "image").length;
  for (const button of document.querySelectorAll("#actions button")) {
    const needs = button.dataset.needs;
    button.hidden = (needs === "image" && images === 0) || (needs === "images" && images < 2);
    button.disabled = false;
  }
  $("actions").hidden = view.files.length === 0;
  highlight();
}

function summary(output) {
  const counts = {};
  for (const item of view.files) counts[item.kind] = (counts[item.kind] || 0) + 1;
  const made = Object.entries(counts).map(([kind, n]) => `${n} ${kind}${n > 1 ? "s" : ""}`).join(", ");
  return `${made || "Nothing"} from ${output.model || output.endpoint}.`;
}

function meta(output) {
  const rows = [];
  const add = (field, label, value) => {
    if (value !== null && value !== undefined && value !== "") rows.push([field, label, String(value)]);
  };
  add("model", "Model", output.model);
  add("endpoint", "Endpoint", output.endpoint);
  add("seed", "Seed", output.seed);
  add("prompt", "Prompt", output.prompt);
  const sizes = [...new Set(output.files.filter((f) => f.width && f.height).map((f) => `${f.width}×${f.height}`))];
  add("size", "Size", sizes.join(", "));
  const durations = output.files.filter((f) => f.duration).map((f) => `${Number(f.duration).toFixed(1)} s`);
  add("duration", "Duration", durations.join(", "));
  if (output.cost) {
    const cost = output.cost;
    add("cost", "Cost", `${cost.cost.toFixed(4)} USD${cost.estimated ? " (estimated)" : ""}, estimated before ${cost.estimate.toFixed(4)} USD`);
  }
  add("request", "fal request", output.request_id);
  for (const note of output.notes || []) add("note", "Note", note);
  $("meta").replaceChildren(
    ...rows.flatMap(([field, label, value]) => {
      const term = document.createElement("dt");
      term.textContent = label;
      const detail = document.createElement("dd");
      detail.dataset.field = field;
      detail.textContent = value;
      return [term, detail];
    }),
  );
}

// -- images: selection, compare, zoom -------------------------------------------------------------------

function pick(index) {
  if (view.comparing) {
    view.selected = [...view.selected.filter((i) => i !== index), index].slice(-2);
    highlight();
    compare();
    return;
  }
  view.selected = [index];
  highlight();
  openZoom(index);
}

function highlight() {
  for (const image of $("grid").children) {
    image.classList.toggle("selected", view.selected.includes(Number(image.dataset.index)));
  }
}

function compare() {
  const shown = view.selected.map((i) => view.files[i]).filter(Boolean);
  $("compare").replaceChildren(
    ...shown.map((item) => {
      const image = document.createElement("img");
      image.src = item.url;
      image.alt = "Compared image";
      return image;
    }),
  );
  $("compare").hidden = !view.comparing || shown.length < 2;
}

function openZoom(index) {
  const item = view.files[index];
  $("zoom-image").src = item.url;
  $("zoom").hidden = false;
  setZoom(1);
}

function setZoom(level) {
  view.zoom = Math.min(8, Math.max(0.125, level));
  const image = $("zoom-image");
  const width = image.naturalWidth || view.files[view.selected[0]]?.file.width || 0;
  if (width) image.style.width = `${Math.round(width * view.zoom)}px`;
  $("zoom-level").textContent = `${Math.round(view.zoom * 100)}%`;
}

$("zoom-in").addEventListener("click", () => setZoom(view.zoom * 2));
$("zoom-out").addEventListener("click", () => setZoom(view.zoom / 2));
$("zoom-close").addEventListener("click", () => ($("zoom").hidden = true));
$("zoom-image").addEventListener("load", () => setZoom(view.zoom));
$("zoom-view").addEventListener(
  "wheel",
  (event) => {
    if (!event.ctrlKey) return;
    event.preventDefault();
    setZoom(view.zoom * (event.deltaY < 0 ? 1.25 : 0.8));
  },
  { passive: false },
);
$("compare-toggle").addEventListener("click", () => {
  view.comparing = !view.comparing;
  $("compare-toggle").setAttribute("aria-pressed", String(view.comparing));
  if (view.comparing && view.selected.length < 2) {
    const images = view.files.map((f, i) => (f.kind === "image" ? i : -1)).filter((i) => i >= 0);
    view.selected = images.slice(0, 2);
  }
  highlight();
  compare();
});

// -- audio: waveform and playhead ----------------------------------------------------------------------

let peaks = null;

async function waveform(bytes) {
  const context = new OfflineAudioContext(1, 1, 44100);
  const audio = await context.decodeAudioData(bytes.slice().buffer);
  const samples = audio.getChannelData(0);
  const canvas = $("waveform");
  const columns = canvas.width;
  const step = Math.max(1, Math.floor(samples.length / columns));
  peaks = new Float32Array(columns);
  for (let column = 0; column < columns; column++) {
    let peak = 0;
    for (let i = column * step; i < Math.min(samples.length, (column + 1) * step); i++) {
      peak = Math.max(peak, Math.abs(samples[i]));
    }
    peaks[column] = peak;
  }
  draw();
}

function draw() {
  if (!peaks) return;
  const canvas = $("waveform");
  const g = canvas.getContext("2d");
  const style = getComputedStyle(document.documentElement);
  const { width, height } = canvas;
  const audio = $("audio");
  const played = audio.duration ? (audio.currentTime / audio.duration) * width : 0;
  g.clearRect(0, 0, width, height);
  for (let x = 0; x < width; x++) {
    const h = Math.max(1, peaks[x] * (height - 4));
    g.fillStyle = x < played ? style.getPropertyValue("--accent") : style.getPropertyValue("--muted");
    g.fillRect(x, (height - h) / 2, 1, h);
  }
}

$("audio").addEventListener("timeupdate", draw);
$("audio").addEventListener("seeked", draw);
$("waveform").addEventListener("click", (event) => {
  const audio = $("audio");
  if (!audio.duration) return;
  const box = event.currentTarget.getBoundingClientRect();
  audio.currentTime = ((event.clientX - box.left) / box.width) * audio.duration;
});

// -- jobs that outlive their call ------------------------------------------------------------------------

async function follow(jobId) {
  view.following = jobId;
  $("job").hidden = false;
  status("The job is still running; its result will be shown here.");
  while (view.following === jobId) {
    const result = await app.callServerTool({
      name: "check_job",
      arguments: { job_id: jobId, wait_seconds: CHECK_WAIT_SECONDS },
    });
    const output = result?.structuredContent;
    if (result?.isError || !output) {
      $("job").hidden = true;
      status(textOf(result) || "The job could not be checked.", true);
      return;
    }
    if (Array.isArray(output.files)) {
      view.following = null;
      return show(result);
    }
    $("job-text").textContent = `${output.status}${output.progress ? `: ${output.progress}` : ""}`;
    if (output.status === "failed" || output.status === "cancelled") {
      view.following = null;
      $("job").hidden = true;
      status(textOf(result), true);
      return;
    }
  }
}

// -- actions, through the host to the server's own tools ----------------------------------------------------

function target() {
  return view.files[view.selected[0]] || view.files[0];
}

async function run(tool, args, label) {
  for (const button of document.querySelectorAll("#actions button")) button.disabled = true;
  status(`${label}…`);
  try {
    const result = await app.callServerTool({ name: tool, arguments: args });
    await show(result, tool, args);
  } catch (error) {
    status(`${label} failed: ${error.message}`, true);
  } finally {
    for (const button of document.querySelectorAll("#actions button")) button.disabled = false;
  }
}

const actions = {
  variations: () =>
    run(view.tool, { ...view.input, seed: Math.floor(Math.random() * 2 ** 31) }, "Making variations"),
  upscale: () => run("upscale_image", { image_url: target().file.url }, "Upscaling"),
  "remove-background": () => run("remove_background", { image_url: target().file.url }, "Removing the background"),
  "to-video": () =>
    run(
      "generate_video_from_image",
      { image_url: target().file.url, prompt: view.output?.prompt || "gentle camera motion" },
      "Making a video",
    ),
  download: async () => {
    const item = target();
    const name = item.file.url.split("/").pop() || "download";
    const answer = await app.downloadFile({
      contents: [{ type: "resource_link", uri: item.file.url, name, mimeType: item.file.content_type || undefined }],
    });
    if (answer?.isError) status("The host did not download the file.", true);
  },
};

for (const button of document.querySelectorAll("[data-action]")) {
  button.addEventListener("click", () => {
    if (!view.tool && button.dataset.action === "variations") return status("The tool of this result is not known.", true);
    actions[button.dataset.action]().catch((error) => status(error.message, true));
  });
}

// -- the host ---------------------------------------------------------------------------------------------

app.ontoolinput = ({ arguments: args }) => {
  view.input = args || {};
  if (!view.output) status(args?.prompt ? `Making: ${args.prompt}` : "Working…");
};
app.ontoolresult = (result) => {
  show(result).catch((error) => status(`The result could not be shown: ${error.message}`, true));
};
app.ontoolcancelled = () => status("The call was cancelled.", true);
app.onhostcontextchanged = (context) => {
  applyContext(context);
  draw();
};
app.onteardown = async () => {
  view.following = null;
  clear();
  return {};
};

app
  .connect()
  .then(() => applyContext(app.getHostContext()))
  .catch((error) => status(`Could not connect to the host: ${error.message}`, true));
