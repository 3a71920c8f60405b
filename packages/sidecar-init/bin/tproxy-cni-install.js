#!/usr/bin/env node
// The package's bin for the CNI installer (see bin/tproxy-sidecar-init.js for why a committed file).
import "../dist/cni/install-cli.js";
