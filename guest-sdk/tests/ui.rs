//! Compile-fail tests of `#[component]`: each file in `ui/` must fail to compile with the
//! error message in its `.stderr` file (regenerate with `TRYBUILD=overwrite` after checking).

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
