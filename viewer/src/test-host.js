// A minimal MCP Apps host for the viewer's browser tests: it embeds the app's HTML in a sandboxed
// iframe under a strict CSP, speaks the host side of the protocol (ext-apps' AppBridge), and hands
// every request the app makes to the test (window.hostCallTool, hostReadResource, hostDownloadFile,
// hostOpenLink, functions the test exposes), which forwards it to the real server.
import { AppBridge, PostMessageTransport } from "@modelcontextprotocol/ext-apps/app-bridge";

// What the app may load: its own inline code and style, and media it made from bytes (blob:).
const CSP =
  "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; " +
  "img-src blob: data:; media-src blob: data:; font-src data:; connect-src 'none'";

let bridge = null;

async function mount(html, { toolName, toolInput, theme = "light" }) {
  const frame = document.createElement("iframe");
  frame.id = "app";
  frame.setAttribute("sandbox", "allow-scripts");
  document.getElementById("frame").replaceChildren(frame);
  bridge = new AppBridge(
    null,
    { name: "fal-mcp test host", version: "1.0.0" },
    { serverTools: {}, serverResources: {}, downloadFile: {}, openLinks: {} },
    { hostContext: { theme, toolInfo: { id: "call-1", tool: { name: toolName, inputSchema: { type: "object" } } } } },
  );
  bridge.oncalltool = (params) => window.hostCallTool(params);
  bridge.onreadresource = (params) => window.hostReadResource(params);
  bridge.ondownloadfile = async (params) => (await window.hostDownloadFile(params)) || {};
  bridge.onopenlink = async (params) => (await window.hostOpenLink(params)) || {};
  const initialized = new Promise((resolve) => (bridge.oninitialized = resolve));
  // Listening before the app loads: its first message (ui/initialize) comes as soon as it runs.
  await bridge.connect(new PostMessageTransport(frame.contentWindow, frame.contentWindow));
  frame.srcdoc = html.replace("<head>", `<head><meta http-equiv="Content-Security-Policy" content="${CSP}">`);
  await initialized;
  await bridge.sendToolInput({ arguments: toolInput });
}

window.host = {
  mount,
  sendResult: (result) => bridge.sendToolResult(result),
  setTheme: (theme) => bridge.sendHostContextChange({ theme }),
};
