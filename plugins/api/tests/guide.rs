//! docs/writing-plugins.md shows `examples/deny_helo.rs` whole: the code a newcomer reads is
//! the code `cargo test` builds and tests.

#[test]
fn the_guide_shows_the_example_plugin_as_it_is() {
    let guide = include_str!("../../../docs/writing-plugins.md");
    let example = include_str!("../examples/deny_helo.rs");
    let block = format!("```rust\n{example}```\n");
    assert!(
        guide.contains(&block),
        "docs/writing-plugins.md must show plugins/api/examples/deny_helo.rs verbatim \
         in a rust block: update the guide"
    );
}
