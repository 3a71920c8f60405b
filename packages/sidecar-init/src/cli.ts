#!/usr/bin/env node
import { Command } from "commander";

new Command("tproxy-sidecar-init").description("not implemented yet").parse();
