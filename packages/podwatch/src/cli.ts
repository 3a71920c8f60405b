#!/usr/bin/env node
import { Command } from "commander";

new Command("tproxy-podwatch").description("not implemented yet").parse();
