# Least-privilege grants for the Triton guest (beside plugins/triton.wasm).
# CloudAPI and sdc-docker of one datacenter, the account's key (signs
# CloudAPI requests) and the sdc-docker client certificate that
# sdc-docker-setup.sh generated from it.
http "https://us-central-1.api.mnx.io" {}
http "https://us-central-1.docker.mnx.io:2376" {
  ca_file = "/etc/nomad/triton/docker/ca.pem"
}
secret "triton" { file = "/etc/nomad/triton/id_rsa" }
secret "docker" {
  file = "/etc/nomad/triton/docker/key.pem"
  cert = "/etc/nomad/triton/docker/cert.pem"
}

# With the credentials in the agent's environment instead (see agent.hcl):
# the guest may read the standard variables for cloudapi_url, account, user
# and key_id (a prefix never covers ..._KEY_MATERIAL), and the host takes
# the key from TRITON_KEY_MATERIAL (a path or the PEM text; the guest can
# never read it). Use this secret block instead of the file one above.
# env "TRITON_*" {}
# env "SDC_*" {}
# secret "triton" { env = "TRITON_KEY_MATERIAL" }
