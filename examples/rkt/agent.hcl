# Nomad agent config for the rkt driver (Linux; rkt is abandoned upstream
# and must be installed by the operator). Put the host binary and the guest
# in the plugin dir:
#   plugins/nomad-driver-rkt   (the host binary nomad-driver-wasm, copied or
#                               linked under this name)
#   plugins/rkt.wasm           (the guest: target/wasm32-wasip2/guest/rkt.wasm)
# Nomad must run as root (rkt needs it).
log_level = "INFO"

plugin "nomad-driver-rkt" {
  # --allow-exec grants the guest the one program it runs: rkt.
  args = [
    "--guest", "rkt.wasm",
    "--allow-exec", "/usr/local/bin/rkt",
  ]

  config {
    volumes_enabled = true
  }
}
