// Compiles MercatoToken.sol with the npm solc pinned in package.json (solcjs, standard
// JSON, evmVersion "paris" so that any EVM node runs it, optimizer on) and writes
// MercatoToken.json (abi, bytecode, compiler version) next to it. Run from anywhere:
//   node src/mercato/custody/contracts/compile.mjs            writes the JSON
//   node src/mercato/custody/contracts/compile.mjs --stdout   prints it instead
import { readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(join(here, "..", "..", "..", "..", "package.json"));
const solc = require("solc");

const input = {
  language: "Solidity",
  sources: { "MercatoToken.sol": { content: readFileSync(join(here, "MercatoToken.sol"), "utf8") } },
  settings: {
    evmVersion: "paris",
    optimizer: { enabled: true, runs: 200 },
    // no metadata hash: the bytecode depends on the source and settings only
    metadata: { bytecodeHash: "none" },
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object"] } },
  },
};

const output = JSON.parse(solc.compile(JSON.stringify(input)));
const errors = (output.errors ?? []).filter((entry) => entry.severity === "error");
for (const entry of output.errors ?? []) console.error(entry.formattedMessage);
if (errors.length > 0) process.exit(1);

const contract = output.contracts["MercatoToken.sol"].MercatoToken;
const artifact = {
  contractName: "MercatoToken",
  compiler: `solc ${solc.version()}`,
  evmVersion: input.settings.evmVersion,
  abi: contract.abi,
  bytecode: "0x" + contract.evm.bytecode.object,
};
const text = JSON.stringify(artifact, null, 2) + "\n";
if (process.argv.includes("--stdout")) process.stdout.write(text);
else writeFileSync(join(here, "MercatoToken.json"), text);
