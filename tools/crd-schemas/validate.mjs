// Validate the monitoring.coreos.com objects of a JSON array (a file, or stdin) against the
// Prometheus operator's CRD schemas (kubernetes-models compiles them): types, required fields,
// patterns (durations, ports). Prints kind/name: error per problem, exits 1 on any; an object of
// another group, or of a kind it has no schema for, is a problem too (it would go unchecked).
import { readFileSync } from "node:fs";
import * as v1 from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";

const objects = JSON.parse(readFileSync(process.argv[2] ?? 0, "utf8"));
let problems = 0;
for (const object of objects) {
  const where = `${object.kind}/${object.metadata?.name}`;
  const Model = object.apiVersion === "monitoring.coreos.com/v1" ? v1[object.kind] : undefined;
  if (!Model) {
    console.log(`${where}: no schema for ${object.apiVersion} ${object.kind}`);
    problems++;
    continue;
  }
  try {
    new Model(object).validate();
  } catch (error) {
    console.log(`${where}: ${error.message}`);
    problems++;
  }
}
console.log(`crd-schemas: ${objects.length} object(s), ${problems} problem(s)`);
process.exit(problems ? 1 : 0);
