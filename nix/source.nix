# Exactly the files the build and the tests read, so that the source hash
# changes only when they do.
{ lib }:
lib.fileset.toSource {
  root = ../.;
  fileset = lib.fileset.unions [
    ../Cargo.toml
    ../Cargo.lock
    ../clippy.toml
    ../src
    ../tests
    ../bench
    ../deploy
    # The tests read the reference: its complete policy and its key tables.
    ../docs
    ../fuzz/corpus
  ];
}
