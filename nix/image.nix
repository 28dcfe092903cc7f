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
  config = {
    Entrypoint = [ (lib.getExe image-bouncer) ];
    # Numeric, so runAsNonRoot can check it without an /etc/passwd.
    User = "65534:65534";
    ExposedPorts."8443/tcp" = { };
    Labels = {
      "org.opencontainers.image.title" = "image-bouncer";
      "org.opencontainers.image.version" = version;
    };
  };
}
