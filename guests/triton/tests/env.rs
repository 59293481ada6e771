//! The standard TRITON_*/SDC_* environment as the fallback for the plugin
//! config: read through the host's `env` capability (deny by default, here
//! the testkit's fake with the host's own grant rules) in `set-config`.
//! Build the guest first:
//! `cargo build -p triton-guest --target wasm32-wasip2 --profile guest`.

#![allow(clippy::unwrap_used)]

use nomad_driver_testkit::{Harness, Health, Level};
use triton::config::PluginConf;

fn harness() -> Harness {
    Harness::load("triton").unwrap()
}

/// The plugin config the guest kept from `set-config`.
fn kept(h: &Harness) -> PluginConf {
    serde_json::from_slice(h.guest_config().unwrap()).unwrap()
}

fn invalid(h: &mut Harness, hcl: &str) -> String {
    let e = h.set_config(hcl).unwrap_err();
    e.invalid_config()
        .unwrap_or_else(|| panic!("expected invalid-config, got {e}"))
        .to_owned()
}

fn set_all(h: &mut Harness, prefix: &str) {
    let lower = prefix.to_ascii_lowercase();
    h.set_env(
        &format!("{prefix}URL"),
        &format!("https://{lower}cloudapi.test/"),
    );
    h.set_env(&format!("{prefix}ACCOUNT"), &format!("{lower}acct"));
    h.set_env(&format!("{prefix}USER"), &format!("{lower}user"));
    h.set_env(
        &format!("{prefix}KEY_ID"),
        &format!("/{lower}acct/keys/{lower}fp"),
    );
}

/// `c` holds what `set_all(h, "TRITON_")` set, each field.
#[track_caller]
fn assert_triton_values(c: &PluginConf) {
    assert_eq!(
        c.cloudapi_url.as_deref(),
        Some("https://triton_cloudapi.test")
    );
    assert_eq!(c.account.as_deref(), Some("triton_acct"));
    assert_eq!(c.user.as_deref(), Some("triton_user"));
    assert_eq!(c.key_id.as_deref(), Some("/triton_acct/keys/triton_fp"));
}

#[test]
fn the_environment_alone_configures_the_driver() {
    let mut h = harness();
    set_all(&mut h, "TRITON_");
    h.set_env("TRITON_KEY_MATERIAL", "/etc/triton/id_rsa");
    h.grant_env("TRITON_*");
    h.secret_env("triton", "TRITON_KEY_MATERIAL");
    h.set_config("").unwrap();
    let c = kept(&h);
    assert_triton_values(&c);
    // Nothing names the secret: the conventional one signs.
    assert_eq!(c.key.as_deref(), Some("triton"));
    assert_eq!(h.fingerprint().health, Health::Healthy);
    // The key's variable is the host's: the guest never asks for it.
    assert!(!h.env_reads().contains(&"TRITON_KEY_MATERIAL"));
}

#[test]
fn triton_variables_win_over_sdc_ones() {
    let mut h = harness();
    set_all(&mut h, "TRITON_");
    set_all(&mut h, "SDC_");
    h.grant_env("TRITON_*");
    h.grant_env("SDC_*");
    h.set_config("").unwrap();
    let c = kept(&h);
    assert_triton_values(&c);
    // The SDC_* forms were not even read.
    assert!(
        !h.env_reads().iter().any(|n| n.starts_with("SDC_")),
        "{:?}",
        h.env_reads()
    );
}

#[test]
fn sdc_variables_fill_what_triton_ones_leave_unset() {
    let mut h = harness();
    set_all(&mut h, "SDC_");
    h.set_env("TRITON_ACCOUNT", "triton_acct");
    // Set but empty counts as unset, as in triton-go.
    h.set_env("TRITON_URL", "");
    h.grant_env("TRITON_*");
    h.grant_env("SDC_*");
    h.set_config("").unwrap();
    let c = kept(&h);
    assert_eq!(c.cloudapi_url.as_deref(), Some("https://sdc_cloudapi.test"));
    assert_eq!(c.account.as_deref(), Some("triton_acct"));
    assert_eq!(c.user.as_deref(), Some("sdc_user"));
    assert_eq!(c.key_id.as_deref(), Some("/sdc_acct/keys/sdc_fp"));
}

#[test]
fn the_plugin_config_wins_over_the_environment() {
    let mut h = harness();
    set_all(&mut h, "TRITON_");
    set_all(&mut h, "SDC_");
    h.grant_env("TRITON_*");
    h.grant_env("SDC_*");
    h.set_config("cloudapi_url = \"https://config.test\"\naccount = \"cfgacct\"\nkey = \"mykey\"")
        .unwrap();
    let c = kept(&h);
    assert_eq!(c.cloudapi_url.as_deref(), Some("https://config.test"));
    assert_eq!(c.account.as_deref(), Some("cfgacct"));
    assert_eq!(c.key.as_deref(), Some("mykey"));
    // Fields the config leaves out still come from the environment.
    assert_eq!(c.user.as_deref(), Some("triton_user"));
    assert_eq!(c.key_id.as_deref(), Some("/triton_acct/keys/triton_fp"));
    // A field the config sets is not looked up at all.
    let reads = h.env_reads();
    assert!(
        !reads.contains(&"TRITON_URL") && !reads.contains(&"TRITON_ACCOUNT"),
        "{reads:?}"
    );
}

#[test]
fn a_missing_field_names_the_config_field_and_its_variables() {
    let mut h = harness();
    h.set_env("TRITON_URL", "https://cloudapi.test");
    h.grant_env("TRITON_*");
    h.grant_env("SDC_*");
    let text = invalid(&mut h, "");
    assert_eq!(
        text,
        "account: required with cloudapi_url: set account in the plugin config, or \
         TRITON_ACCOUNT or SDC_ACCOUNT in the Nomad agent's environment"
    );
    // A bad value from the environment names where it came from.
    let mut h = harness();
    h.set_env("SDC_URL", "cloudapi.test");
    h.grant_env("SDC_*");
    let text = invalid(&mut h, "");
    assert!(
        text.starts_with("cloudapi_url (from SDC_URL): expected an http:// or https:// URL"),
        "{text}"
    );
    let mut h = harness();
    h.set_env("TRITON_URL", "https://cloudapi.test");
    h.set_env("TRITON_ACCOUNT", "my");
    h.grant_env("TRITON_*");
    let text = invalid(&mut h, "");
    assert!(
        text.starts_with("account (from TRITON_ACCOUNT): expected the account login"),
        "{text}"
    );
}

#[test]
fn variables_not_granted_count_as_unset_and_say_so() {
    // Nothing granted: today's behaviour, an unconfigured driver.
    let mut h = harness();
    set_all(&mut h, "TRITON_");
    h.set_config("").unwrap();
    assert_eq!(kept(&h), PluginConf::default());
    let fp = h.fingerprint();
    assert_eq!(fp.health, Health::Undetected);
    assert!(fp.description.contains("TRITON_URL"), "{}", fp.description);
    let debug: Vec<&str> = h
        .logs()
        .iter()
        .filter(|l| l.level == Level::Debug)
        .map(|l| l.message.as_str())
        .collect();
    assert!(
        debug
            .iter()
            .any(|m| m.contains("TRITON_URL is treated as unset")
                && m.contains("env \"TRITON_URL\" {}")),
        "{debug:?}"
    );
    // With the URL configured, the error says which variables were refused.
    let mut h = harness();
    h.set_env("TRITON_ACCOUNT", "acct");
    let text = invalid(
        &mut h,
        "cloudapi_url = \"https://cloudapi.test\"\nkey = \"triton\"",
    );
    assert!(
        text.ends_with(
            "(TRITON_ACCOUNT, SDC_ACCOUNT not granted to the plugin: add \
             `env \"TRITON_ACCOUNT\" {}` to its grants file)"
        ),
        "{text}"
    );
}

#[test]
fn a_fingerprint_in_triton_key_id_becomes_the_keyid() {
    let conf = |vars: &[(&str, &str)]| {
        let mut h = harness();
        h.grant_env("TRITON_*");
        h.set_env("TRITON_URL", "https://cloudapi.test");
        h.set_env("TRITON_ACCOUNT", "acct");
        for (k, v) in vars {
            h.set_env(k, v);
        }
        h.set_config("").unwrap();
        let debug: Vec<String> = h
            .logs()
            .iter()
            .filter(|l| l.level == Level::Debug)
            .map(|l| l.message.clone())
            .collect();
        (kept(&h).key_id, debug)
    };
    let fp = "a4:c6:f3:75:80:27:e0:03:a9:98:79:ef:c5:0a:06:11";
    assert_eq!(
        conf(&[("TRITON_KEY_ID", fp)]).0,
        Some(format!("/acct/keys/{fp}"))
    );
    assert_eq!(
        conf(&[
            ("TRITON_KEY_ID", &format!("MD5:{fp}")),
            ("TRITON_USER", "bob")
        ])
        .0,
        Some(format!("/acct/users/bob/keys/{fp}"))
    );
    // A whole keyId is kept as it is.
    assert_eq!(
        conf(&[("TRITON_KEY_ID", "/acct/keys/id_ed25519")])
            .0
            .as_deref(),
        Some("/acct/keys/id_ed25519")
    );
    // A SHA256 fingerprint cannot be in a keyId: the host derives it.
    let (key_id, debug) = conf(&[("TRITON_KEY_ID", "SHA256:Vb4bOVt1A0C7/VqnT5Xh1ZP")]);
    assert_eq!(key_id, None);
    assert!(
        debug
            .iter()
            .any(|m| m.contains("TRITON_KEY_ID is a SHA256 fingerprint")),
        "{debug:?}"
    );
}

#[test]
fn the_guest_reads_only_the_standard_names_it_lacks() {
    // Even with all of TRITON_* granted, the guest asks for the standard
    // names of the fields it still lacks, TRITON_* first, and no others.
    let mut h = harness();
    h.grant_env("TRITON_*");
    h.set_env("TRITON_URL", "https://cloudapi.test");
    h.set_env("TRITON_ACCOUNT", "acct");
    h.set_config("").unwrap();
    let mut reads = h.env_reads();
    reads.sort();
    assert_eq!(
        reads,
        [
            "SDC_KEY_ID",
            "SDC_USER",
            "TRITON_ACCOUNT",
            "TRITON_KEY_ID",
            "TRITON_URL",
            "TRITON_USER"
        ]
    );
}
