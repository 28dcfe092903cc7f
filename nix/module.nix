# services.image-bouncer for NixOS: the same service, user and hardening as
# systemd/image-bouncer.service (see the comments there for each line).
self:
{
  config,
  lib,
  pkgs,
  utils,
  ...
}:
let
  cfg = config.services.image-bouncer;
  inherit (lib) mkOption types;
  # What both units share: no privileges, a read-only system, no devices,
  # kernel or other processes, ordinary system calls, TCP and AF_UNIX.
  hardening = {
    CapabilityBoundingSet = "";
    AmbientCapabilities = "";
    NoNewPrivileges = true;
    ProtectSystem = "strict";
    ProtectHome = true;
    PrivateTmp = true;
    PrivateMounts = true;
    PrivateDevices = true;
    DevicePolicy = "closed";
    PrivateUsers = true;
    ProtectKernelTunables = true;
    ProtectKernelModules = true;
    ProtectKernelLogs = true;
    ProtectControlGroups = true;
    ProtectClock = true;
    ProtectHostname = true;
    ProtectProc = "invisible";
    ProcSubset = "pid";
    RestrictAddressFamilies = [
      "AF_INET"
      "AF_INET6"
      "AF_UNIX"
    ];
    RestrictNamespaces = true;
    RestrictRealtime = true;
    RestrictSUIDSGID = true;
    LockPersonality = true;
    MemoryDenyWriteExecute = true;
    RemoveIPC = true;
    SystemCallArchitectures = "native";
    SystemCallFilter = [
      "@system-service"
      "~@privileged @resources"
    ];
    SystemCallErrorNumber = "EPERM";
  };
in
{
  options.services.image-bouncer = {
    enable = lib.mkEnableOption "the image-bouncer admission webhook";
    package = mkOption {
      type = types.package;
      default = self.packages.${pkgs.stdenv.hostPlatform.system}.default;
      defaultText = lib.literalExpression "image-bouncer.packages.\${pkgs.stdenv.hostPlatform.system}.default";
      description = "The image-bouncer package (built with the cached toolchain; `static` is the musl one).";
    };
    listen = mkOption {
      type = types.str;
      default = "127.0.0.1:8443";
      description = "Address to listen on; the local apiserver calls it.";
    };
    metricsListen = mkOption {
      type = types.nullOr types.str;
      default = "127.0.0.1:9090";
      description = "Plain-HTTP address for /metrics, /healthz and /readyz (null: none).";
    };
    certFile = mkOption {
      type = types.str;
      default = "/etc/image-bouncer/pki/tls.crt";
      description = "Serving certificate (PEM), readable by the image-bouncer group: `image-bouncer certs --out /etc/image-bouncer/pki --group image-bouncer ...` makes the folder 0750 and the key 0640 for it.";
    };
    keyFile = mkOption {
      type = types.str;
      default = "/etc/image-bouncer/pki/tls.key";
      description = "Serving key (PEM), readable by the image-bouncer group (`certs --group image-bouncer` writes it 0640 for that group, in a 0750 folder).";
    };
    clientCaFile = mkOption {
      type = types.nullOr types.str;
      default = "/etc/image-bouncer/pki/ca-bundle.crt";
      description = "CA of the apiserver's client certificate; null accepts any client.";
    };
    clientNames = mkOption {
      type = types.listOf types.str;
      default = [ "kube-apiserver" ];
      description = "Accepted client certificate names (CN or DNS SAN).";
    };
    policyFile = mkOption {
      type = types.nullOr types.str;
      default = "/etc/image-bouncer/policy.d";
      description = "Policy file, or a folder of policy files (*.json, *.yaml, *.yml: a set of policies), reloaded when it changes.";
    };
    allowedAddresses = mkOption {
      type = types.listOf types.str;
      default = [ "localhost" ];
      description = "Addresses the service may talk to (IPAddressAllow): the apiserver's, when listen is not loopback; registries, when lookups are configured.";
    };
    extraArgs = mkOption {
      type = types.listOf types.str;
      default = [ ];
      description = "More `image-bouncer serve` flags.";
    };
    trust = {
      enable = lib.mkEnableOption "a daily `image-bouncer trust update` of sigstore's trusted root (systemd/image-bouncer-trust.{service,timer})";
      out = mkOption {
        type = types.str;
        default = "/etc/image-bouncer/trust/trusted_root.json";
        description = "Where the trusted root is written (policies name it); the TUF metadata trusted is kept beside it.";
      };
      tufUrl = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = "The TUF repository (null: sigstore's, https://tuf-repo-cdn.sigstore.dev).";
      };
      tufRoot = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = "The TUF root to start from (null: sigstore's, built into the binary).";
      };
    };
  };

  config = lib.mkIf cfg.enable {
    users.users.image-bouncer = {
      isSystemUser = true;
      group = "image-bouncer";
    };
    users.groups.image-bouncer = { };

    systemd.services.image-bouncer = {
      description = "image-bouncer container image admission webhook";
      wantedBy = [
        "multi-user.target"
        "kubelet.service"
      ];
      before = [ "kubelet.service" ];
      after = [ "network-online.target" ];
      wants = [ "network-online.target" ];
      serviceConfig = hardening // {
        # systemd expands % specifiers and $ in ExecStart: escaped for it.
        ExecStart = utils.escapeSystemdExecArgs (
          [
            (lib.getExe cfg.package)
            "serve"
            "--listen"
            cfg.listen
            "--cert"
            cfg.certFile
            "--key"
            cfg.keyFile
          ]
          ++ lib.optionals (cfg.metricsListen != null) [
            "--metrics-listen"
            cfg.metricsListen
          ]
          ++ lib.optionals (cfg.clientCaFile != null) [
            "--client-ca"
            cfg.clientCaFile
          ]
          ++ lib.optionals (cfg.clientCaFile != null) (
            lib.concatMap (n: [
              "--client-name"
              n
            ]) cfg.clientNames
          )
          ++ lib.optionals (cfg.policyFile != null) [
            "--policy"
            cfg.policyFile
          ]
          ++ cfg.extraArgs
        );
        # READY=1 once it serves (and around reloads): see systemd/image-bouncer.service.
        Type = "notify";
        NotifyAccess = "main";
        ExecReload = "${pkgs.coreutils}/bin/kill -HUP $MAINPID";
        Restart = "always";
        RestartSec = "1s";
        TimeoutStopSec = "15s";
        User = "image-bouncer";
        Group = "image-bouncer";
        IPAddressDeny = "any";
        IPAddressAllow = cfg.allowedAddresses;
        UMask = "0077";
        LimitNOFILE = 16384;
        TasksMax = 4200;
        MemoryMax = "256M";
      };
    };

    # The trusted root kept current: systemd/image-bouncer-trust.service
    # and .timer (see the comments there).
    assertions = [
      {
        assertion =
          !cfg.trust.enable
          || !(builtins.elem (builtins.dirOf cfg.trust.out) [
            "/"
            "/etc"
            "/etc/image-bouncer"
          ]);
        message = "services.image-bouncer.trust.out must be in a folder of its own (the updater may write that folder): e.g. /etc/image-bouncer/trust/trusted_root.json";
      }
    ];
    systemd.tmpfiles.rules = lib.mkIf cfg.trust.enable [
      "d ${builtins.dirOf cfg.trust.out} 0755 image-bouncer image-bouncer -"
    ];
    systemd.services.image-bouncer-trust = lib.mkIf cfg.trust.enable {
      description = "image-bouncer: update sigstore's trusted root from its TUF repository";
      after = [ "network-online.target" ];
      wants = [ "network-online.target" ];
      serviceConfig = hardening // {
        Type = "oneshot";
        ExecStart = utils.escapeSystemdExecArgs (
          [
            (lib.getExe cfg.package)
            "trust"
            "update"
            "--out"
            cfg.trust.out
          ]
          ++ lib.optionals (cfg.trust.tufUrl != null) [
            "--tuf-url"
            cfg.trust.tufUrl
          ]
          ++ lib.optionals (cfg.trust.tufRoot != null) [
            "--tuf-root"
            cfg.trust.tufRoot
          ]
        );
        User = "image-bouncer";
        Group = "image-bouncer";
        TimeoutStartSec = "5min";
        ReadWritePaths = [ (builtins.dirOf cfg.trust.out) ];
        InaccessiblePaths = [ "-${builtins.dirOf cfg.keyFile}" ];
        UMask = "0022";
        MemoryMax = "128M";
        TasksMax = 64;
      };
    };
    systemd.timers.image-bouncer-trust = lib.mkIf cfg.trust.enable {
      wantedBy = [ "timers.target" ];
      timerConfig = {
        OnBootSec = "5min";
        OnCalendar = "daily";
        RandomizedDelaySec = "1h";
        Persistent = true;
      };
    };
  };
}
