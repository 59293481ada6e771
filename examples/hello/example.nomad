# The hello driver's example job, as in HashiCorp's skeleton driver.
# Run it with: nomad job run example.nomad
job "example" {
  datacenters = ["dc1"]
  type        = "batch"

  group "example" {
    task "hello-world" {
      driver = "hello-world-example"

      config {
        greeting = "hello"
      }
    }
  }
}
