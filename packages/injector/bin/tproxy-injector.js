#!/usr/bin/env node
// The package's bin. A committed file rather than dist/cli.js itself: npm links bins during `npm ci`,
// before the root `prepare` script has built dist/. The import runs the command line.
import "../dist/cli.js";
