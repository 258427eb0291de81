//! docs/audit-events.md shows one example document per action; these are the documents the
//! code produces for `schema_examples()`, so the page cannot drift from the schema.

use custos_audit::schema_examples;

fn example_blocks() -> Vec<(String, String)> {
    schema_examples()
        .into_iter()
        .map(|(seq, e)| {
            (
                e.action(),
                format!("```json\n{}\n```", e.to_document(seq).pretty()),
            )
        })
        .collect()
}

#[test]
fn every_example_in_the_docs_matches_the_code() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/audit-events.md");
    let docs = std::fs::read_to_string(path).expect("docs/audit-events.md");
    for (action, block) in example_blocks() {
        assert!(
            docs.contains(&format!("#### `{action}`\n\n{block}\n")),
            "docs/audit-events.md does not show the current example of {action}; print the \
             examples with `cargo test -p custos-audit --test docs -- --ignored --nocapture`"
        );
    }
}

#[test]
#[ignore = "prints the examples section of docs/audit-events.md"]
fn print_examples() {
    for (action, block) in example_blocks() {
        println!("#### `{action}`\n\n{block}\n");
    }
}
