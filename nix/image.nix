# A scratch OCI image: the static binary and nothing else (no shell, no CA
# bundle: image-bouncer makes no outgoing TLS connections). Reproducible:
# the creation date stays at the epoch.
#
#   nix build .#image && ./result | ctr -n k8s.io images import -
{
  lib,
  dockerTools,
  image-bouncer,
  version,
  arch,
}:
dockerTools.streamLayeredImage {
  name = "image-bouncer";
  tag = version;
  # Same name and tag for every architecture; import the one matching the node.
  architecture = arch;
  contents = [ image-bouncer ];
  # User (numeric, so runAsNonRoot can check it without an /etc/passwd),
  # ports and labels come from image-config.json, which the container
  # runtime test (tests/container.sh) builds its image from too.
  config =
    let
      shared = builtins.fromJSON (builtins.readFile ./image-config.json);
    in
    {
      Entrypoint = [ (lib.getExe image-bouncer) ];
      inherit (shared) User;
      ExposedPorts = lib.genAttrs shared.ExposedPorts (_: { });
      Labels = shared.Labels // {
        "org.opencontainers.image.version" = version;
      };
    };
}
