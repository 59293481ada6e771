job "example-docker" {
  datacenters = ["dc1"]
  type        = "service"

  group "cache" {
    task "redis" {
      driver = "triton"

      config {
        api_type = "docker_api"

        docker_api {
          hostname       = "redis"
          dns            = ["8.8.8.8", "8.8.4.4"]
          public_network = "sdc_nat"
          labels {
            group = "webservice-cache"
          }
          log_config {
            type = "syslog"
            config {
              syslog-address = "tcp://10.45.136.2:514"
            }
          }
          ports {
            tcp = [6379]
          }
          image {
            name      = "redis"
            tag       = "latest"
            auto_pull = true
          }
          restart_policy = "no"
        }

        tags {
          role = "cache"
        }
        cns = ["redis:6379"]

        package {
          name = "sample-512M"
        }
      }

      kill_timeout = "30s"
    }
  }
}
