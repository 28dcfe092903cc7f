# A stand-in for nixpkgs with only what flake.nix uses, for the offline
# structure checks (`nix flake check --no-build --override-input nixpkgs
# path:tests/nix-stub`). Builders are stubs that are never run; they check
# the arguments the real functions need, so a missing file, option or
# attribute fails evaluation here as it would there. It proves nothing
# about the real build.
{
  outputs =
    { self }:
    let
      lib = {
        genAttrs = names: f: builtins.listToAttrs (map (n: { name = n; value = f n; }) names);
        optionalAttrs = cond: attrs: if cond then attrs else { };
        optionals = cond: list: if cond then list else [ ];
        concatMap = f: list: builtins.concatLists (map f list);
        getExe =
          drv:
          assert drv.meta ? mainProgram;
          "${drv}/bin/${drv.meta.mainProgram}";
        escapeShellArgs = args: builtins.concatStringsSep " " args;
        literalExpression = text: { _type = "literalExpression"; inherit text; };
        mapAttrs = builtins.mapAttrs;
        # A NixOS system: each module is called with the options' defaults
        # (and what the system module sets), and the service it defines is
        # forced, as the real evaluation would.
        nixosSystem =
          { system, modules }:
          let
            module = builtins.head modules;
            settings = builtins.elemAt modules 1;
            args = config: {
              inherit config lib;
              pkgs = (pkgsFor system system) // { stdenv.hostPlatform.system = system; };
              utils.escapeSystemdExecArgs =
                args: assert builtins.all builtins.isString args; builtins.concatStringsSep " " args;
            };
            options = (module (args { })).options.services.image-bouncer;
            cfg = builtins.mapAttrs (_: o: o.default or false) options // settings.services.image-bouncer;
            evaluated = (module (args { services.image-bouncer = cfg; })).config;
            service = evaluated.systemd.services.image-bouncer;
          in
          assert builtins.isString service.serviceConfig.ExecStart;
          assert builtins.isList service.serviceConfig.IPAddressAllow;
          assert options.package ? defaultText;
          {
            config.system.build.toplevel = stub system "nixos-system" { };
          };
        mkIf = cond: value: if cond then value else { };
        mkEnableOption = what: { type = "bool"; description = what; };
        mkOption = attrs: attrs;
        types = {
          package = "package";
          str = "str";
          nullOr = t: "nullOr ${t}";
          listOf = t: "listOf ${t}";
        };
        licenses.asl20 = "Apache-2.0";
        platforms.linux = [ "x86_64-linux" "aarch64-linux" ];
        fileset = {
          unions = list: list;
          # Every listed file must exist: the real toSource fails otherwise.
          toSource =
            { root, fileset }:
            assert builtins.all builtins.pathExists fileset;
            root;
        };
      };

      stub =
        system: name: attrs:
        derivation {
          inherit name system;
          builder = "/bin/sh";
          args = [ "-c" "echo stand-in > $out" ];
        }
        // attrs;

      pkgsFor =
        system: hostSystem:
        let
          pkgs = rec {
            inherit lib;
            stdenv = {
              buildPlatform.canExecute = p: p.system == system;
              hostPlatform.system = hostSystem;
            };
            callPackage =
              fn: overrides:
              let
                f = if builtins.isFunction fn then fn else import fn;
              in
              f (builtins.intersectAttrs (builtins.functionArgs f) pkgs // overrides);
            rustPlatform.buildRustPackage =
              args:
              assert builtins.pathExists args.cargoLock.lockFile;
              assert builtins.pathExists (args.src + "/Cargo.toml");
              stub system "${args.pname}-${args.version}" {
                inherit (args) pname version;
                meta = args.meta or { };
              };
            dockerTools.streamLayeredImage =
              args:
              assert args.config.User == "65534:65534";
              assert builtins.length args.config.Entrypoint == 1;
              assert builtins.elem args.architecture [ "amd64" "arm64" ];
              assert !(args ? created);
              stub system "${args.name}-${args.tag}-${args.architecture}.tar" { };
            clippy = stub system "clippy" { };
            rustfmt = stub system "rustfmt" { };
            coreutils = stub system "coreutils" { };
          };
        in
        pkgs;

      legacy =
        system:
        pkgsFor system system
        // {
          pkgsStatic = pkgsFor system system;
          pkgsCross.aarch64-multiplatform.pkgsStatic = pkgsFor system "aarch64-linux";
        };
    in
    {
      inherit lib;
      legacyPackages = {
        x86_64-linux = legacy "x86_64-linux";
        aarch64-linux = legacy "aarch64-linux";
      };
    };
}
