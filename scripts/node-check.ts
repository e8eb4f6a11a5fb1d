// Fails fast with a clear message when the tests are started under an old Node.
// npm puts node_modules/.bin (which holds the pinned Node 22 from the `node` package) first on PATH,
// so `npm test` gets Node 22 even where the system Node is 20.
const major = Number(process.versions.node.split('.')[0]);
if (major < 22) {
  console.error(
    `bitnet-edge needs Node >= 22 (running ${process.version}). Run through npm (npm test / npm start) after npm ci.`,
  );
  process.exit(1);
}
