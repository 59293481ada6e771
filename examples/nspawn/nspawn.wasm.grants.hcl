# What the nspawn guest may run on the host, and with which arguments.
# Install it beside the guest as `nspawn.wasm.grants.hcl`.

# The containers themselves, and `systemd-nspawn --version`.
exec "/usr/bin/systemd-nspawn" {}

# Is the job's image a directory (-D), a disk image (-i), or missing?
exec "/usr/bin/test" {
  args_prefix = [["-d"], ["-e"]]
}

# Fingerprint: is the host root?
exec "/usr/bin/id" {
  args_prefix = [["-u"]]
}

# Without machined: find the container's PID 1 (the nspawn process by its
# --machine= argument, then its child) and check it by pid namespace; the
# memory of the processes in that namespace for task stats.
exec "/usr/bin/pgrep" {
  args_prefix = [["--oldest"]]
}
exec "/usr/bin/ps" {
  args_prefix = [["-o", "pidns=", "-p"], ["-o", "pidns=,rss=", "-e"]]
}

# Signals to the container's command or init (also SIGRTMIN+3), and the
# final kill of a container whose nspawn was killed.
exec "/usr/bin/kill" {
  args_prefix = [["-s"]]
}

# `nomad alloc exec` and script checks without machined: enter the
# container's namespaces and root.
exec "/usr/bin/nsenter" {}

# With systemd as PID 1 (machined): probe, leader, poweroff, terminate, exec.
exec "/usr/bin/machinectl" {
  args_prefix = [["list"], ["show"], ["poweroff"], ["terminate"]]
}
exec "/usr/bin/systemd-run" {
  args_prefix = [["--wait"]]
}
