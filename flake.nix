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

      # The source revision `--version` prints (none for a dirty tree).
      revision = self.shortRev or null;
      # The binary, with the tests run or not (they belong in `checks`, not
      # in what a node builds to install).
      binary =
        pkgs: runTests:
        pkgs.callPackage ./nix/package.nix {
          inherit version revision runTests;
        };
      # A scratch OCI image holding only a static binary; `arch` is the OCI name.
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
          # Built with the toolchain of the public binary cache: what
          # `nix run` and the NixOS module use, minutes to build on a node.
          native = binary pkgs false;
          # Static musl: for a scratch image or a node without Nix. Its
          # toolchain (musl GCC, rustc) is not in the binary cache: the
          # first build compiles it (hours on a small node; build it once
          # elsewhere and copy the closure).
          static = binary pkgs.pkgsStatic false;
          nativeArch = if system == "x86_64-linux" then "amd64" else "arm64";
        in
        {
          default = native;
          image-bouncer = native;
          inherit static;
          image = image pkgs static nativeArch;
        }
        # From x86_64 also the aarch64 binary and image, cross-compiled, so
        # one build machine serves a mixed cluster.
        // lib.optionalAttrs (system == "x86_64-linux") (
          let
            cross = binary pkgs.pkgsCross.aarch64-multiplatform.pkgsStatic false;
          in
          {
            static-aarch64 = cross;
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
            meta.description = "Run the image-bouncer admission webhook";
          };
        }
      );

      # services.image-bouncer, with the hardening of systemd/image-bouncer.service.
      nixosModules.default = import ./nix/module.nix self;

      # `nix flake check` is the whole CI on a machine with Nix: the test
      # suite, the lints, every package and image, and the NixOS module.
      checks = forAllSystems (
        system: pkgs:
        {
          # The unit and end-to-end tests (they start the binary on
          # 127.0.0.1, which the build sandbox allows).
          tests = binary pkgs true;
          clippy = pkgs.callPackage ./nix/lint.nix {
            inherit version;
            lint = "clippy";
          };
          fmt = pkgs.callPackage ./nix/lint.nix {
            inherit version;
            lint = "fmt";
          };
          # The module evaluated in a NixOS system with the service on.
          nixos =
            (lib.nixosSystem {
              inherit system;
              modules = [
                self.nixosModules.default
                {
                  services.image-bouncer.enable = true;
                  boot.isContainer = true;
                  system.stateVersion = "25.11";
                }
              ];
            }).config.system.build.toplevel;
        }
        // self.packages.${system}
      );
    };
}
