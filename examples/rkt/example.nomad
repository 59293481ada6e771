# A job using every field of the rkt driver's documented task configuration
# (image, command, args, trust_prefix, dns_servers, dns_search_domains).
job "example" {
  datacenters = ["dc1"]

  group "etcd" {
    task "etcd" {
      driver = "rkt"

      config {
        image              = "coreos.com/etcd:v2.0.4"
        command            = "/etcd"
        args               = ["--version", "--data-dir=/local"]
        trust_prefix       = "coreos.com/etcd"
        dns_servers        = ["8.8.8.8", "8.8.4.4"]
        dns_search_domains = ["example.com"]
      }

      resources {
        cpu    = 500
        memory = 256
      }
    }
  }
}
