#!/usr/bin/env bun
// pandaproxy entry point: everything happens in lib/cli.ts.
import { main } from "./lib/cli.ts";

process.exitCode = await main(process.argv.slice(2));
