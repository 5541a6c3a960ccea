// Calls every tool of an MCP server with the TypeScript SDK client (@modelcontextprotocol/sdk), as a
// host built on it does: tools/list first (the client then checks each tools/call's structuredContent
// against the tool's outputSchema, and throws on a mismatch), then each call of the table in order.
//
//   node call_tools.mjs TABLE OUT --url URL [--header "Name: value"]...
//   node call_tools.mjs TABLE OUT -- COMMAND [ARG]...      (stdio; the server gets this process's env)
//
// TABLE: tool_calls.json with its file placeholders filled in. OUT: where the outcome goes, as JSON:
// {sdk, tools (the names tools/list gave), outputSchemas (by tool), results: [{tool, arguments, isError,
// structuredContent, text, schemaError} or {tool, arguments, error}]}. A failed call is recorded, not
// fatal: the test reads OUT. schemaError: what this script's own check (the SDK's Ajv validator, on every
// result with structuredContent, isError ones too) found wrong with it against the listed outputSchema,
// else null; the SDK's callTool checks too, and throws (then `error` says so).

import { readFileSync, writeFileSync } from "node:fs";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { AjvJsonSchemaValidator } from "@modelcontextprotocol/sdk/validation/ajv";

const CALL_TIMEOUT_MS = 120_000; // a hang guard, never a timing assertion

function transportFrom(rest) {
  if (rest[0] === "--") {
    const [command, ...args] = rest.slice(1);
    return new StdioClientTransport({ command, args, env: process.env, stderr: "inherit" });
  }
  const headers = {};
  let url;
  for (let i = 0; i < rest.length; i += 2) {
    if (rest[i] === "--url") url = rest[i + 1];
    else if (rest[i] === "--header") {
      const [name, ...value] = rest[i + 1].split(":");
      headers[name.trim()] = value.join(":").trim();
    } else throw new Error(`unknown argument ${rest[i]}`);
  }
  if (!url) throw new Error("give --url URL, or -- COMMAND ARGS for stdio");
  return new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers } });
}

// A string that is a whole "<name>" of a value saved from an earlier call is that value.
function fill(value, saved) {
  if (typeof value === "string") {
    const match = /^<([a-z_]+)>$/.exec(value);
    return match && Object.hasOwn(saved, match[1]) ? saved[match[1]] : value;
  }
  if (Array.isArray(value)) return value.map((item) => fill(item, saved));
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([key, item]) => [key, fill(item, saved)]));
  }
  return value;
}

const [tablePath, outPath, ...rest] = process.argv.slice(2);
const table = JSON.parse(readFileSync(tablePath, "utf8"));
const sdk = JSON.parse(
  readFileSync(new URL("./node_modules/@modelcontextprotocol/sdk/package.json", import.meta.url), "utf8"),
).version;

const client = new Client({ name: "fal-mcp-tests-ts-sdk", version: "1.0.0" });
await client.connect(transportFrom(rest));
const listed = await client.listTools(); // caches the output schemas callTool validates against
const outputSchemas = Object.fromEntries(
  listed.tools.filter((tool) => tool.outputSchema).map((tool) => [tool.name, tool.outputSchema]),
);
const ajv = new AjvJsonSchemaValidator();
const validators = Object.fromEntries(
  Object.entries(outputSchemas).map(([name, schema]) => [name, ajv.getValidator(schema)]),
);
const saved = {};
const results = [];
for (const call of table.calls) {
  const args = fill(call.arguments, saved);
  const entry = { tool: call.tool, arguments: args };
  try {
    const result = await client.callTool({ name: call.tool, arguments: args }, undefined, {
      timeout: CALL_TIMEOUT_MS,
    });
    entry.isError = result.isError === true;
    entry.structuredContent = result.structuredContent ?? null;
    const check = validators[call.tool];
    const verdict = check && result.structuredContent ? check(result.structuredContent) : null;
    entry.schemaError = verdict && !verdict.valid ? verdict.errorMessage : null;
    entry.text = result.content
      .filter((part) => part.type === "text")
      .map((part) => part.text)
      .join("\n");
    for (const [name, field] of Object.entries(call.save ?? {})) {
      saved[name] = result.structuredContent?.[field];
    }
  } catch (error) {
    entry.error = error instanceof Error ? error.message : String(error);
  }
  results.push(entry);
}
await client.close();
writeFileSync(
  outPath,
  JSON.stringify({ sdk, tools: listed.tools.map((tool) => tool.name), outputSchemas, results }, null, 1),
);
