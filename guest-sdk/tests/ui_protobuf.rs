//! Compile-fail tests of protobuf payloads (the `protobuf` feature): each file in
//! `ui-protobuf/` must fail to compile with the error message in its `.stderr` file (regenerate
//! with `TRYBUILD=overwrite` after checking). Without the feature there is nothing here.

#![cfg(feature = "protobuf")]

#[test]
fn ui_protobuf() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui-protobuf/*.rs");
}
