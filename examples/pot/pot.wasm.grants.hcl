# Least-privilege grants for the pot guest (put beside pot.wasm; the
# --allow-exec args in agent.hcl are then not needed). Each program may only
# be run with the argument prefixes listed: exactly the pot subcommands the
# driver uses, and `uname -s` for the fingerprint's FreeBSD check.
# Optionally pin the build: sha256 = "<sha256sum of pot.wasm>"

exec "/usr/local/bin/pot" {
  args_prefix = [
    ["version"],
    ["ls", "-q"],
    ["prepare", "-U"],
    ["set-attribute", "-p"],
    ["copy-in", "-p"],
    ["mount-in", "-p"],
    ["set-env", "-p"],
    ["set-hosts", "-p"],
    ["set-rss", "-M"],
    ["start"],
    ["signal", "-s"],
    ["exec", "-p"],
    ["get-rss", "-p"],
    ["last-run-stats", "-p"],
    ["destroy", "-p"],
  ]
}

exec "/usr/bin/uname" {
  args_prefix = [["-s"]]
}
