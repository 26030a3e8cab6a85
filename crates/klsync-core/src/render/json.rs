//! The plan as JSON, the format `schemas/plan.schema.json` describes.

use crate::plan::Plan;

/// Pretty JSON with a trailing newline. Field order is the declaration order of the plan types
/// and maps are sorted, so the output is stable.
pub fn json(plan: &Plan) -> String {
    // Plan holds only strings, numbers, bools, sorted maps and JSON values: serialising it
    // cannot fail.
    let mut out = serde_json::to_string_pretty(plan).expect("a plan serialises to JSON");
    out.push('\n');
    out
}
