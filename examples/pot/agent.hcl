# Nomad agent config for the pot driver (FreeBSD only). Put the host binary
# and the guest in the plugin dir:
#   plugins/nomad-driver-pot   (the host binary nomad-driver-wasm, copied or
#                               linked under this name)
#   plugins/pot.wasm           (the guest: target/wasm32-wasip2/guest/pot.wasm)
# Nomad must run as root with /usr/local/bin on its PATH (pot needs both).
log_level = "INFO"

plugin "nomad-driver-pot" {
  # --allow-exec grants the guest the programs it runs: pot itself, and
  # uname, which the fingerprint runs to check the host is FreeBSD.
  args = [
    "--guest", "pot.wasm",
    "--allow-exec", "/usr/local/bin/pot",
    "--allow-exec", "/usr/bin/uname",
  ]

  config {
    enabled = true
  }
}
