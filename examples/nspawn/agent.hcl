# Nomad agent config for the systemd-nspawn driver (a Wasm guest of the
# nomad-driver-wasm host). Put in the agent's plugin dir:
#   plugins/nomad-driver-wasm            the host binary
#   plugins/nspawn.wasm                  the guest
#   plugins/nspawn.wasm.grants.hcl       what the guest may run (beside it)
# Build the example image, then start the agent (as root: nspawn needs it):
#   examples/nspawn/build-image.sh /var/lib/machines/busybox
#   nomad agent -dev -config=agent.hcl -plugin-dir=$(pwd)/plugins
log_level = "INFO"

plugin "nomad-driver-wasm" {
  # The programs the guest may run are granted in nspawn.wasm.grants.hcl.
  args = ["--guest", "nspawn.wasm"]

  config {
    # Jobs' relative `image` paths are resolved here (machinectl's own
    # image directory).
    image_root = "/var/lib/machines"
    # "auto": register with systemd-machined when systemd is PID 1, else
    # run with --register=no --keep-unit. "always" / "never" force it.
    machined = "auto"
    # false: refuse `bind` / `bind_read_only` in jobs.
    volumes = true
  }
}
