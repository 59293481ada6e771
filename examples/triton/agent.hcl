# Nomad agent config for the Triton driver. Put the host binary and the
# guest in the plugin dir:
#   plugins/nomad-driver-triton   (the host binary nomad-driver-wasm, copied
#                                  or linked under this name)
#   plugins/triton.wasm           (target/wasm32-wasip2/guest/triton.wasm)
#   plugins/triton.wasm.grants.hcl (optional: the grants below as a file,
#                                  which can also give sdc-docker's TLS
#                                  client certificate; see that file)
#
# The private key stays with the host: the guest names the secret grant
# ("triton") and the host signs each CloudAPI request with it.
log_level = "INFO"

plugin "nomad-driver-triton" {
  args = [
    "--guest", "triton.wasm",
    "--allow-http", "https://us-central-1.api.mnx.io",
    "--secret", "triton=/etc/nomad/triton/id_rsa",
  ]

  config {
    cloudapi_url = "https://us-central-1.api.mnx.io"
    account      = "bruce_dev"
    # user       = "ops"          # an RBAC sub-user of the account
    key          = "triton"       # the secret grant that signs
    # key_id     = "/bruce_dev/keys/<md5 fingerprint>"   # default: derived
    # algorithm  = "rsa-sha256"   # default: the key's own

    # For api_type = "docker_api" (needs the grants file for the client cert):
    # docker_url  = "https://us-central-1.docker.mnx.io:2376"
    # docker_cert = "docker"
  }
}

# The same from the agent's environment, for operators who already export
# TRITON_URL, TRITON_ACCOUNT, TRITON_KEY_ID, TRITON_KEY_MATERIAL (or the
# SDC_* forms; TRITON_* wins) where the Nomad agent starts. Fields the
# config leaves out are read from TRITON_*/SDC_* (only if granted), and
# `key` defaults to "triton". The key itself is read by the host only.
#
# plugin "nomad-driver-triton" {
#   args = [
#     "--guest", "triton.wasm",
#     "--allow-http", "https://us-central-1.api.mnx.io",
#     "--allow-env", "TRITON_*",
#     "--allow-env", "SDC_*",
#     "--secret", "triton=env:TRITON_KEY_MATERIAL",
#   ]
#   config {}
# }
