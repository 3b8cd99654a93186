// Node's own TLS client as a slicer's verifier (run with node, not bun): the chain must lead to CAFILE and the
// name must be the printer's serial (tls.connect with servername and the default checkServerIdentity).
// usage: node tls-verify-node.mjs handshake HOST PORT SERIAL CAFILE
//        node tls-verify-node.mjs ftps HOST PORT SERIAL CAFILE USER PASSWORD   (basic-ftp: implicit FTPS, LIST)
// Prints "verified" and exits 0, or prints the error and exits 1.
import { readFileSync } from "node:fs";
import { connect } from "node:tls";

const [mode, host, port, serial, caFile, user, password] = process.argv.slice(2);
const ca = readFileSync(caFile);
const fail = (error) => {
  console.log(`refused: ${error?.message ?? error}`);
  process.exit(1);
};
setTimeout(() => fail(new Error("timed out")), 10_000).unref();

if (mode === "handshake") {
  const socket = connect({ host, port: Number(port), ca, servername: serial }, () => {
    if (!socket.authorized) fail(socket.authorizationError);
    console.log("verified");
    socket.destroy();
  });
  socket.on("error", fail);
} else if (mode === "ftps") {
  const { Client } = await import("basic-ftp");
  const client = new Client(10_000);
  try {
    // basic-ftp keeps these options for its data connections, so they are verified against the serial too.
    await client.access({ host, port: Number(port), user, password, secure: "implicit", secureOptions: { ca, servername: serial, maxVersion: "TLSv1.2" } });
    await client.list("/");
    client.close();
    console.log("verified");
  } catch (error) {
    client.close();
    fail(error);
  }
} else {
  fail(new Error(`unknown mode ${mode}`));
}
