# `cargo clippy -D warnings` or `cargo fmt --check` as a flake check.
{
  lib,
  rustPlatform,
  clippy,
  rustfmt,
  version,
  lint,
}:
rustPlatform.buildRustPackage {
  pname = "image-bouncer-${lint}";
  inherit version;
  src = import ./source.nix { inherit lib; };
  cargoLock.lockFile = ../Cargo.lock;
  nativeBuildInputs = [
    clippy
    rustfmt
  ];
  buildPhase =
    if lint == "clippy" then
      "cargo clippy --offline --all-targets -- -D warnings"
    else
      "cargo fmt --check";
  doCheck = false;
  # A lint has no binary to audit.
  auditable = false;
  installPhase = "touch $out";
}
