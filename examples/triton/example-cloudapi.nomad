job "example-cloudapi" {
  datacenters = ["dc1"]
  type        = "service"

  group "web" {
    task "nginx" {
      driver = "triton"

      config {
        api_type = "cloud_api"

        cloud_api {
          image {
            name        = "base-64-lts"
            most_recent = true
          }
          networks {
            name = "sdc_nat"
          }
          user_script = "#!/bin/sh\npkgin -y install nginx && svcadm enable nginx"
        }

        tags {
          role = "web"
        }
        affinity            = ["instance!=web*"]
        deletion_protection = false
        fwenabled           = true
        fwrules {
          web = "FROM any TO tag role=web ALLOW tcp PORT 80"
        }
        cns = ["web:80"]

        package {
          name = "sample-512M"
        }
        exit_strategy = "deleted"
      }

      resources {
        cpu    = 100
        memory = 128
      }
    }
  }
}
