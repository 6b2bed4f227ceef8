// OpenAI's own TypeScript SDK (@openai/codex-sdk) driving `supervisor.py exec` through codexPathOverride.
// Run by tests/cli/test_codex_sdk.py: argv[2] is a JSON object {codex, baseUrl, apiKey, env, workdir, image,
// schema}.
// Prints one JSON line: what each scenario saw (the test asserts on it and on the fake server's requests).
import { Codex } from "@openai/codex-sdk";

const opts = JSON.parse(process.argv[2]);
const codex = new Codex({ codexPathOverride: opts.codex, baseUrl: opts.baseUrl, apiKey: opts.apiKey, env: opts.env });
const threadOptions = { workingDirectory: opts.workdir, skipGitRepoCheck: true, sandboxMode: "workspace-write",
                        approvalPolicy: "never", modelReasoningEffort: "low" };
const seen = {};

// 1. a simple turn
const simple = codex.startThread(threadOptions);
const first = await simple.run("say hi");
seen.simple = { id: simple.id, finalResponse: first.finalResponse, usage: first.usage, items: first.items };

// 2. a shell call
const shell = codex.startThread(threadOptions);
const ran = await shell.run("run echo hi");
seen.shell = { id: shell.id, finalResponse: ran.finalResponse, items: ran.items };

// 3. the first thread resumed by id, with an image and an output schema (`resume ID --image F`)
const resumed = codex.resumeThread(seen.simple.id, threadOptions);
const again = await resumed.run([{ type: "text", text: "again" }, { type: "local_image", path: opts.image }],
                                { outputSchema: opts.schema });
seen.resume = { id: resumed.id, finalResponse: again.finalResponse, usage: again.usage };

// 4. four subagents, streamed
const spawn = codex.startThread(threadOptions);
const { events } = await spawn.runStreamed("spawn four subagents and wait for them");
seen.spawn = { events: [] };
for await (const event of events) {
  seen.spawn.events.push(event);
}
seen.spawn.id = spawn.id;

console.log(JSON.stringify(seen));
