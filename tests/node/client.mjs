// A SessionService client in another language: loads the .proto files, starts a session, streams its
// events to SessionConfigured, and stops it. Usage: node client.mjs TARGET REPO_ROOT CWD
// TARGET is HOST:PORT or unix:PATH; the token is read from $SUPERVISOR_TOKEN and sent as
// `authorization: Bearer TOKEN` on every call. Prints one JSON line with what it saw; exits non-zero on any failure.
import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";
import path from "node:path";

const [target, root, cwd] = process.argv.slice(2);
const definition = protoLoader.loadSync("protos/supervisor/v1/session.proto", {
  includeDirs: [root],
  keepCase: true,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
});
const pkg = grpc.loadPackageDefinition(definition).supervisor.v1;
const client = new pkg.SessionService(target, grpc.credentials.createInsecure());
const deadline = () => new Date(Date.now() + 10000);
const token = process.env.SUPERVISOR_TOKEN || "";

function auth() {
  const metadata = new grpc.Metadata();
  if (token) metadata.set("authorization", `Bearer ${token}`);
  return metadata;
}

function call(method, request, metadata = auth()) {
  return new Promise((resolve, reject) => {
    client[method](request, metadata, { deadline: deadline() }, (err, reply) => (err ? reject(err) : resolve(reply)));
  });
}

function fail(err) {
  console.error(`node client failed: ${err.stack || err}`);
  process.exit(1);
}

try {
  const started = await call("StartSession", { cwd, client_name: "node-test", client_version: "1.0" });
  const sessionId = started.session_id;
  const metadata = auth();
  metadata.set("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-03");
  const first = await new Promise((resolve, reject) => {
    const stream = client.StreamEvents({ session_id: sessionId, from_seq: 0 }, metadata, { deadline: deadline() });
    stream.on("data", (event) => {
      if (event.msg === "session_configured") {
        resolve(event);
        stream.cancel();
      }
    });
    stream.on("error", (err) => {
      if (err.code !== grpc.status.CANCELLED) reject(err);
    });
  });
  const stopped = await call("StopSession", { session_id: sessionId });
  let notFound = null;
  try {
    await call("GetSession", { session_id: "does-not-exist" });
  } catch (err) {
    notFound = err.code;
  }
  let unauthenticated = null;
  try {
    await call("ListSessions", {}, new grpc.Metadata());
  } catch (err) {
    unauthenticated = err.code;
  }
  console.log(JSON.stringify({
    session_id: sessionId,
    first_kind: first.msg,
    first_seq: first.seq,
    client_name: first.session_configured.configuration.app_server_client_name,
    last_seq: stopped.last_seq,
    not_found_code: notFound,
    unauthenticated_code: unauthenticated,
  }));
  client.close();
} catch (err) {
  fail(err);
}
