// The chart's values are documented once, by the `## @param key description` lines of values.yaml (the
// format of @bitnami/readme-generator-for-helm). This regenerates from them the Values tables of the
// chart README and the descriptions in values.schema.json: `npm run chart:docs` (chart directory as the
// optional argument). test/chart/chart.test.ts checks that the committed files are what it makes.
//
// It drives the generator's own modules rather than its CLI for two things the CLI cannot do:
// - a value documented as one `[object]` or `[array]` (resources, security contexts, tolerations) shows
//   its real default in the table, where the CLI prints `{}` or `[]`;
// - values.schema.json stays hand-written for its constraints (enums, patterns, minimums, closed objects,
//   which the generator's schema, types and defaults only, cannot express) and only its descriptions come
//   from values.yaml.
// The generator's key check still runs: a value without `## @param` (or a `## @param` of no value) fails.
import { readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parse as parseYaml } from "yaml";

const require = createRequire(import.meta.url);
const GENERATOR = "@bitnami/readme-generator-for-helm";

/** The generator's view of one documented value (lib/parameter.js). */
interface Parameter {
  name: string;
  description: string;
  value: unknown;
  modifiers: string[];
  readonly skip: boolean;
  readonly extra: boolean;
}
interface Section {
  name: string;
  parameters: Parameter[];
}
interface Metadata {
  sections: Section[];
  parameters: Parameter[];
}

const generator = {
  parser: require(`${GENERATOR}/lib/parser.js`) as {
    parseMetadataComments(valuesPath: string, config: unknown): Metadata;
    createValuesObject(valuesPath: string): unknown[];
  },
  checker: require(`${GENERATOR}/lib/checker.js`) as { checkKeys(values: unknown[], params: Parameter[]): void },
  builder: require(`${GENERATOR}/lib/builder.js`) as {
    combineMetadataAndValues(values: unknown[], params: Parameter[]): void;
    buildParamsToRenderList(params: Parameter[], config: unknown): Parameter[];
  },
  render: require(`${GENERATOR}/lib/render.js`) as { insertReadmeTable(readmePath: string, sections: Section[], config: unknown): void },
};

/** The generator's default configuration, with the README section it replaces named `## Values`. */
const CONFIG = {
  comments: { format: "##" },
  tags: { param: "@param", section: "@section", descriptionStart: "@descriptionStart", descriptionEnd: "@descriptionEnd", skip: "@skip", extra: "@extra" },
  modifiers: { array: "array", object: "object", string: "string", nullable: "nullable", default: "default" },
  regexp: { paramsSectionTitle: "Values" },
};

/** Runs `fn` with the generator's console chatter captured; a throw carries what it printed (its list of errors). */
function quietly<T>(fn: () => T): T {
  const printed: string[] = [];
  const log = console.log;
  console.log = (...args: unknown[]) => void printed.push(args.map(String).join(" "));
  try {
    return fn();
  } catch (err) {
    const errors = printed.filter((l) => l.startsWith("ERROR"));
    throw new Error(`values.yaml's documentation does not match its values: ${(err as Error).message}\n${errors.join("\n")}`, { cause: err });
  } finally {
    console.log = log;
  }
}

function valueAt(values: unknown, path: string): unknown {
  return path.split(".").reduce<unknown>((node, key) => (node !== null && typeof node === "object" ? (node as Record<string, unknown>)[key] : undefined), values);
}

/** Rewrites README.md's `## Values` section and values.schema.json's descriptions in `chartDir`. */
export function generateChartDocs(chartDir: string): void {
  const valuesPath = join(chartDir, "values.yaml");
  const values = parseYaml(readFileSync(valuesPath, "utf8")) as unknown;
  const metadata = quietly(() => {
    const found = generator.parser.createValuesObject(valuesPath);
    const parsed = generator.parser.parseMetadataComments(valuesPath, CONFIG);
    generator.checker.checkKeys(found, parsed.parameters);
    generator.builder.combineMetadataAndValues(found, parsed.parameters);
    return parsed;
  });
  const outside = metadata.parameters.filter((p) => !p.skip && !metadata.sections.some((s) => s.parameters.includes(p)));
  if (outside.length > 0) throw new Error(`values.yaml documents ${outside.map((p) => p.name).join(", ")} before any \`## @section\`: the README would leave them out`);

  for (const section of metadata.sections) {
    section.parameters = generator.builder.buildParamsToRenderList(section.parameters, CONFIG);
    // The table shows what values.yaml holds, also for a value documented as a whole object or list.
    for (const p of section.parameters) if (p.modifiers.includes("object") || p.modifiers.includes("array")) p.value = valueAt(values, p.name);
  }
  quietly(() => generator.render.insertReadmeTable(join(chartDir, "README.md"), metadata.sections, CONFIG));

  const schemaPath = join(chartDir, "values.schema.json");
  const schema = JSON.parse(readFileSync(schemaPath, "utf8")) as Record<string, unknown>;
  for (const section of metadata.sections) {
    for (const p of section.parameters) {
      let node: Record<string, unknown> | undefined = schema;
      for (const key of p.name.split(".")) node = (node?.["properties"] as Record<string, Record<string, unknown>> | undefined)?.[key];
      if (node === undefined) throw new Error(`values.schema.json has no property for ${p.name}: add it (with its constraints) before regenerating`);
      node["description"] = p.description;
    }
  }
  writeFileSync(schemaPath, `${JSON.stringify(schema, null, 2)}\n`);
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const chartDir = resolve(process.argv[2] ?? join(fileURLToPath(import.meta.url), "../../../charts/tproxy"));
  generateChartDocs(chartDir);
  console.log(`regenerated ${join(chartDir, "README.md")} (Values) and ${join(chartDir, "values.schema.json")} (descriptions) from values.yaml`);
}
