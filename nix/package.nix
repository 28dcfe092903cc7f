# The image-bouncer binary. Called from flake.nix with the cached native
# toolchain (`nix run`, the NixOS module) or pkgs.pkgsStatic (musl, static,
# for images); the ring crypto provider needs no cmake or OpenSSL.
{
  lib,
  stdenv,
  rustPlatform,
  version,
  revision ? null,
  # The test suite runs in `checks.tests`, not in every build of the
  # package (it is timing-sensitive and slow on a small node).
  runTests ? false,
}:
rustPlatform.buildRustPackage {
  pname = "image-bouncer";
  inherit version;
  src = import ./source.nix { inherit lib; };
  cargoLock.lockFile = ../Cargo.lock;
  # Read by `image-bouncer --version` at build time.
  env = lib.optionalAttrs (revision != null) { IMAGE_BOUNCER_REVISION = revision; };

  # The end-to-end tests start the binary on 127.0.0.1, which the build
  # sandbox allows; they cannot run for another architecture.
  doCheck = runTests && stdenv.buildPlatform.canExecute stdenv.hostPlatform;

  meta = {
    description = "Kubernetes admission webhook that decides which container images may run";
    license = lib.licenses.asl20;
    mainProgram = "image-bouncer";
    platforms = lib.platforms.linux;
  };
}
