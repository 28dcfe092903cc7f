{
  description = "image-bouncer: a Kubernetes admission webhook that decides which container images may run";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      # Control-plane nodes: Intel/AMD and ARM (Graviton, Ampere, Raspberry Pi).
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: lib.genAttrs systems (system: f system nixpkgs.legacyPackages.${system});
      version = (builtins.fromTOML (builtins.readFile ./Cargo.toml)).package.version;

      # A static musl binary: runs on any Linux node, and alone in a scratch image.
      # The source revision `--version` prints (none for a dirty tree).
      revision = self.shortRev or null;
      binary = pkgs: pkgs.callPackage ./nix/package.nix { inherit version revision; };
      # A scratch OCI image holding only that binary; `arch` is the OCI name.
      image =
        pkgs: bin: arch:
        pkgs.callPackage ./nix/image.nix {
          inherit version arch;
          image-bouncer = bin;
        };
    in
    {
      packages = forAllSystems (
        system: pkgs:
        let
          native = binary pkgs.pkgsStatic;
          nativeArch = if system == "x86_64-linux" then "amd64" else "arm64";
        in
        {
          default = native;
          image-bouncer = native;
          image = image pkgs native nativeArch;
        }
        # From x86_64 also the aarch64 binary and image, cross-compiled, so
        # one build machine serves a mixed cluster.
        // lib.optionalAttrs (system == "x86_64-linux") (
          let
            cross = binary pkgs.pkgsCross.aarch64-multiplatform.pkgsStatic;
          in
          {
            image-bouncer-aarch64 = cross;
            image-aarch64 = image pkgs cross "arm64";
          }
        )
      );

      # `nix run github:<owner>/image-bouncer -- serve ...`
      apps = forAllSystems (
        system: _pkgs: {
          default = {
            type = "app";
            program = lib.getExe self.packages.${system}.default;
          };
        }
      );

      # services.image-bouncer, with the hardening of systemd/image-bouncer.service.
      nixosModules.default = import ./nix/module.nix self;

      # `nix flake check` is the whole CI on a machine with Nix.
      checks = forAllSystems (
        system: pkgs: {
          # The static build runs `cargo test` (unit and end-to-end tests).
          build = self.packages.${system}.default;
          clippy = pkgs.callPackage ./nix/lint.nix {
            inherit version;
            lint = "clippy";
          };
          fmt = pkgs.callPackage ./nix/lint.nix {
            inherit version;
            lint = "fmt";
          };
        }
      );
    };
}
