# Nomad agent config for the hello driver. Put the host binary and the guest
# in the plugin dir:
#   plugins/nomad-driver-wasm   (the host binary, executable)
#   plugins/hello.wasm          (the guest)
# then: nomad agent -dev -config=agent.hcl -plugin-dir=$(pwd)/plugins
log_level = "INFO"

plugin "nomad-driver-wasm" {
  # --guest names the driver guest; --allow-exec grants it the binaries it
  # may run (deny by default).
  args = [
    "--guest", "hello.wasm",
    "--allow-exec", "/usr/bin/bash",
    "--allow-exec", "/usr/bin/fish",
  ]

  config {
    shell = "bash"
  }
}
