# A busybox container from the image examples/nspawn/build-image.sh builds
# (put it at /var/lib/machines/busybox, the agent's image_root).
# Run it with: nomad job run example.nomad
job "nspawn-example" {
  datacenters = ["dc1"]
  type        = "batch"

  group "example" {
    task "busybox" {
      driver = "nspawn"

      config {
        image       = "busybox"
        boot        = false
        process_two = true
        # A private copy for every run: several allocations can use the
        # image at once, and nothing they write is kept.
        ephemeral = true
        command = [
          "/bin/sh", "-c",
          "echo \"hello from $(hostname): $GREETING\"; ls /local > /dev/null && echo \"task dir at $NOMAD_TASK_DIR\"",
        ]
        environment = {
          GREETING = "hi from the job"
        }
      }

      resources {
        memory = 64
      }
    }
  }
}
