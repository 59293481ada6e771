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
